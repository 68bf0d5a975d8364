"""Train and evaluate Faster R-CNN on MobileNet (V1 paper 4.6, Table 13: "Faster-RCNN
300" and "600", 300 RPN proposals per image).

    python recipes/faster_rcnn_coco.py                    # synthetic shapes, CPU, a few minutes, learns
    python recipes/faster_rcnn_coco.py --data-dir ~/tensorflow_datasets --image-size 300 --strategy auto \\
        --output-dir runs/frcnn300                        # --data-dir alone means --dataset coco/2017
    python recipes/faster_rcnn_coco.py --eval-only --weights runs/frcnn300/best.weights.h5 --image-size 300 \\
        --data-dir ~/tensorflow_datasets --output-dir runs/frcnn300_eval
    python recipes/faster_rcnn_coco.py --help

COCO defaults follow the TF Object Detection API's Faster R-CNN configs
(``faster_rcnn_inception_v2_coco.config``, whose ``train_config`` the other
``faster_rcnn_*`` configs share; see ``COCO_DEFAULTS``): keep-aspect-ratio resizing to
min side 600 (``--image-size 300`` for the paper's smaller model) and max side 1024,
random horizontal flip, momentum-0.9 SGD at lr 0.0002 per image of the batch (the
config's batch is 1; its step-downs at 900k and 1.2M steps come after its 200k steps,
so the lr is constant), gradient clipping at global norm 10, 200k images seen (1.7
epochs of COCO 2017's 118,287 training images). The model's settings (grid anchors,
RPN, 300 proposals, 14x14 crops, sampling, losses) are ``heads/faster_rcnn``'s.

The run directory gets config.json, checkpoints (``best`` / ``last.weights.h5``, the
whole model), TensorBoard logs, history.csv, metrics.json (COCO AP, AP50, AP75,
APs/m/l, AR; params and MAdds at --image-size squared, the second stage on
--max-proposals crops), detections.json (COCO results format, COCO category ids,
original image coordinates), ground_truth.json, curves.png, detections.png and
detector/ (a SavedModel: images of any size in, boxes / scores / classes /
num_detections out).
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import walkers  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads.faster_rcnn import anchors, data, model as frcnn  # noqa: E402
from mobilenet_tf.heads.ssdlite import data as ssd_data, evaluation  # noqa: E402
from mobilenet_tf.training import config as config_lib, detection, recipe, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

COCO_TRAIN_IMAGES = 118_287
REFERENCE_BATCH = 1  # the configs' batch_size
COCO_DEFAULTS = dict(backbone="v1", alpha=1.0, image_size=data.MIN_SIDE, anchor_base_size=256,
                     second_stage_stride=1, global_batch_size=8, epochs=max(1, round(200_000 * REFERENCE_BATCH / COCO_TRAIN_IMAGES)),
                     learning_rate=0.0002, warmup_epochs=0.0, bn_momentum=0.997, eval_every=1, shuffle_buffer=256)
# What the synthetic default changes so that it learns on a CPU in minutes. The scenes'
# objects are 19-80 pixels in 160-pixel images: anchors of base 64 (16 to 128 pixels)
# instead of the configs' 256 (64 to 512, for 600-pixel images); the reference code's
# 4x4 second stage (a third of the 7x7 one's MAdds); lr 0.01 per image. Measured
# (--deterministic, AP50): 7x7 at lr 0.0025 / 0.005, 4-epoch runs: 0.572 / 0.564; 4x4,
# 6-epoch runs, after epoch 4: 0.693 at lr 0.005, 0.768 at 0.01 (6 epochs: AP 0.491,
# AP50 0.790).
SYNTHETIC_DEFAULTS = dict(backbone="v1", alpha=0.25, image_size=160, anchor_base_size=64, second_stage_stride=2,
                          global_batch_size=16, epochs=6, learning_rate=0.01, warmup_epochs=0.5, bn_momentum=0.9,
                          eval_every=1, shuffle_buffer=1000)


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate Faster R-CNN on MobileNet (V1 paper 4.6, Table 13)."""

    PRESETS = {"coco": COCO_DEFAULTS, "synthetic": SYNTHETIC_DEFAULTS}

    backbone: Optional[str] = field(None, "v1 (the paper's) | v2 | v3_large | v3_small (a registry name with a "
                                          "stride-16 map and layers after it)")
    alpha: Optional[float] = field(None, "backbone width multiplier")
    reduced_tail: Optional[bool] = field(None, "halve the last stage (V3 only)", default_text="the family's")
    dataset: Optional[str] = field(None, "synthetic | coco/2017 | coco/2014",
                                   choices=["synthetic", *ssd_data.COCO_DATASETS],
                                   default_text="coco/2017 with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir (COCO downloads itself there)")
    image_size: Optional[int] = field(None, "short side the images are resized to, keeping their aspect ratio "
                                            "(the paper: 300 or 600)")
    max_size: int = field(data.MAX_SIDE, "long side limit of the resizing")
    anchor_base_size: Optional[int] = field(None, "grid anchors' base side in pixels (scales 0.25-2 of it)")
    max_proposals: int = field(frcnn.MAX_PROPOSALS, "RPN proposals per image after NMS (the paper: 300)")
    second_stage_stride: Optional[int] = field(None, "1: the layers after C4 dilated, 7x7 crops (the paper's "
                                                     "MAdds) | 2: the reference code's strided layer (4x4)",
                                               choices=[1, 2])
    epochs: Optional[int] = field(None, "epochs (the COCO preset: the config's 200k images)")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training images / global batch")
    global_batch_size: Optional[int] = field(None, "images per step over all replicas")
    learning_rate: Optional[float] = field(None, "lr per image of the batch (scaled by --global-batch-size); "
                                                 "cosine decay to 0 after the warmup on synthetic data, constant "
                                                 "on COCO (the configs')")
    warmup_epochs: Optional[float] = field(None, "linear warmup epochs from 0.1 x the lr, before the cosine "
                                                "decay (synthetic data only: COCO's lr is constant)")
    momentum: float = field(0.9, "SGD momentum")
    clip_norm: float = field(10.0, "clip gradients at this global norm (0: no clipping)")
    bn_momentum: Optional[float] = field(None, "BatchNormalization momentum")
    eval_every: Optional[int] = field(None, "COCO evaluation every N epochs and after the last")
    eval_examples: int = field(0, "evaluate on the first N validation images (0 = all)")
    eval_batch_size: int = field(8, "evaluation batch size")
    shuffle_buffer: Optional[int] = field(None, "examples in the shuffle buffer")
    display_threshold: float = field(0.3, "score threshold for detections.png (evaluation keeps all >= 1e-8)")
    synthetic_classes: int = field(5, "classes of the synthetic dataset, background included")
    synthetic_train_examples: int = field(1000, "synthetic training scenes per epoch")
    synthetic_eval_examples: int = field(200, "synthetic evaluation scenes")
    tflite: str = field("", "not available: the detector needs Select TF ops (see the README)")
    output_dir: str = field("runs/faster_rcnn", "run directory")
    weights: Optional[str] = field(None, "a .weights.h5 of the whole model to start from / evaluate")
    backbone_weights: Optional[str] = field(None, "'imagenet' or a backbone .weights.h5")


class FasterRCNNCOCO(detection.COCODetectionRecipe):
    """Faster R-CNN detection, COCO mAP every --eval-every epochs."""

    Config = Config
    at_least_one = ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer",
                    "max_proposals", "anchor_base_size")
    tflite_formats = ()

    @classmethod
    def validate(cls, config):
        config = super().validate(config)
        if config.tflite:
            raise ValueError("`--tflite`: Faster R-CNN converts to TFLite only with Select TF ops "
                             "(CombinedNonMaxSuppression, CropAndResize), which the builtin TFLite runtime cannot "
                             "run; deploy detector/ (a SavedModel) instead.")
        if config.dataset != "synthetic" and config.warmup_epochs:
            raise ValueError("`--warmup-epochs` belongs to the synthetic preset's cosine schedule; on COCO the lr is "
                             "constant, as in the faster_rcnn configs (leave the flag out).")
        low, high = data.IMAGE_SIZE_RANGE
        for name in ("image_size", "max_size"):
            value = getattr(config, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"`--{name.replace('_', '-')}` must be an integer in [{low}, {high}]; got {value!r}.")
        if config.max_size < config.image_size:
            raise ValueError(f"`--max-size` ({config.max_size}) must be >= `--image-size` ({config.image_size}).")
        mobilenet_tf.registry.options_for(config.backbone, alpha=config.alpha, reduced_tail=config.reduced_tail)
        info = mobilenet_tf.registry.get_entry(config.backbone).feature_info(alpha=config.alpha or 1.0,
                                                                            output_stride=16)
        frcnn.check_backbone(config.backbone, {feature.name: feature for feature in info})
        return config

    def synthetic_size(self):
        return self.config.image_size

    def anchor_spec(self):
        return anchors.GridAnchorSpec(base_size=self.config.anchor_base_size)

    def build_model(self, backbone_weights=None):
        config = self.config
        model = frcnn.build_faster_rcnn(
            config.backbone, num_classes=self.val_split.num_classes, alpha=config.alpha,
            reduced_tail=config.reduced_tail, max_proposals=config.max_proposals,
            second_stage_stride=config.second_stage_stride, anchor_spec=self.anchor_spec(),
            backbone_weights=backbone_weights)
        walkers.configure_batchnorm(model, momentum=config.bn_momentum)
        return model

    def eval_pipeline(self, split, batch_size):
        config = self.config
        return data.make_eval_pipeline(split, min_side=config.image_size, max_side=config.max_size,
                                       batch_size=batch_size)

    def prepare(self):
        self.val_ds = self.eval_pipeline(self.val_split, self.config.eval_batch_size)
        self.evaluator = evaluation.COCOEvaluator(self.val_split, self.val_ds, make_detector=make_detector)

    def build(self):
        config = self.config
        model = self.build_model(config.backbone_weights)
        if config.weights:
            model.load_weights(config.weights)
        return model, make_optimizer(config, self.steps_per_epoch), None, None  # the model computes its losses

    def train_dataset(self):
        config = self.config
        return data.make_train_pipeline(
            self.train_split, min_side=config.image_size, max_side=config.max_size,
            batch_size=config.global_batch_size, shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic, seed=config.seed)

    def profiled_model(self, model):
        return None  # two stages: ``frcnn.profile`` in ``final_metrics``

    def final_metrics(self, model, history):
        config = self.config
        size = frcnn.profile(model, (config.image_size, config.image_size))
        return dict(super().final_metrics(model, history), image_size=config.image_size, max_size=config.max_size,
                    max_proposals=config.max_proposals, second_stage_stride=config.second_stage_stride, **size)

    def export_model(self, model):
        """detector/ (``frcnn.save_detector``): the whole model's weights live in the
        checkpoints; the second stage shares the backbone's layers, which a
        ``model.keras`` of the two stages would duplicate."""
        if self.config.saved_model:
            frcnn.save_detector(model, self.run.path("detector"))


def make_detector(model):
    """Images (B, H, W, 3) -> ``frcnn.detect``'s detections, traced for any image size."""
    return tf.function(lambda images: frcnn.detect(model(images, training=False)), reduce_retracing=True)


def make_optimizer(config, steps_per_epoch):
    """Momentum SGD with the lr per image times the global batch: on COCO constant (the
    configs'), on synthetic data a linear warmup from 0.1x then cosine decay to 0;
    gradients clipped at ``--clip-norm`` (global norm)."""
    lr = config.learning_rate * config.global_batch_size / REFERENCE_BATCH
    if config.dataset != "synthetic":
        schedule = lr
    else:
        schedule = schedules.warmup_cosine(0.1 * lr, lr, config.epochs, steps_per_epoch, config.warmup_epochs)
    return keras.optimizers.SGD(schedule, momentum=config.momentum, global_clipnorm=config.clip_norm or None)


Config, resolve, main, get_args_parser, cli = recipe.script(FasterRCNNCOCO)

if __name__ == "__main__":
    cli()
