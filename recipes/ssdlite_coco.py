"""Train and evaluate SSD detectors: SSDLite on MobileNet V2/V3 (V2 paper 6.2, V3 paper
6.2) and, with ``--head ssd``, SSD 300 on MobileNet V1 (V1 paper 4.6, Table 13).

    python recipes/ssdlite_coco.py                        # synthetic shapes, CPU, a few minutes, learns
    python recipes/ssdlite_coco.py --head ssd             # SSD 300's head (V1 backbone), synthetic shapes
    python recipes/ssdlite_coco.py --backbone v3_small --data-dir ~/tensorflow_datasets --strategy auto \\
        --output-dir runs/ssd                             # --data-dir alone means --dataset coco/2017
    python recipes/ssdlite_coco.py --eval-only --weights runs/ssd/best.weights.h5 --backbone v3_small \\
        --data-dir ~/tensorflow_datasets --output-dir runs/ssd_eval
    python recipes/ssdlite_coco.py --help

COCO defaults follow the TF Object Detection API's
``ssdlite_mobilenet_v3_large_320x320_coco.config`` (see ``COCO_DEFAULTS``): 320x320,
momentum-0.9 SGD, cosine decay from lr 0.4 at batch 512 with a linear warmup from
0.13333 over 2000 steps, 400k steps, focal loss, L2 4e-5, BN decay 0.97, SSD
random crop + flip. With ``--head ssd`` they follow ``ssd_mobilenet_v1_coco.config``
(see ``SSD_COCO_DEFAULTS``): V1 at 300x300, RMSProp (rho 0.9, momentum 0.9,
epsilon 1) from lr 0.004 at batch 24 decayed x0.95 every 800,720 steps, 200k steps,
sigmoid loss with hard-negative mining (3:1), L2 4e-5, BN decay 0.9997. The
learning rates are scaled linearly to the global batch you use, and the step
counts are kept as images seen: warmup and length are given in epochs (2000 x 512
images = 8.7 epochs; 400k x 512 = 1731 epochs of COCO 2017's 118,287 training
images), so a smaller batch takes more steps.

The run directory gets config.json, checkpoints, TensorBoard logs, history.csv,
metrics.json (COCO AP, AP50, AP75, APs/m/l, AR), detections.json (COCO results
format, COCO category ids), ground_truth.json, curves.png, detections.png,
model.keras, saved_model/ (raw outputs), detector/ (a SavedModel with decoding and
NMS in the graph), and optionally TFLite detectors.
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads import ssdlite  # noqa: E402
from mobilenet_tf.heads.ssdlite import data, deploy, evaluation, losses  # noqa: E402
from mobilenet_tf.training import config as config_lib, detection, recipe, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

COCO_TRAIN_IMAGES = 118_287
REFERENCE_BATCH = 512
COCO_DEFAULTS = dict(backbone="v3_large", input_size=320, epochs=round(400_000 * REFERENCE_BATCH / COCO_TRAIN_IMAGES),
                     global_batch_size=64, optimizer="momentum", learning_rate=0.4, warmup_learning_rate=0.13333,
                     warmup_epochs=2000 * REFERENCE_BATCH / COCO_TRAIN_IMAGES, bn_momentum=ssdlite.model.BN_MOMENTUM,
                     loss="focal", eval_every=10, shuffle_buffer=256, alpha=1.0)
# What the synthetic default changes so that it learns on a CPU in minutes (lrs at batch 512).
# Width 0.5: on these scenes it learns faster than 1.0, not only per second (6 epochs,
# deterministic: AP 0.497 / AP50 0.797 at 0.5, AP 0.458 / AP50 0.765 at 1.0; 17-18 vs
# 28-29 s per epoch).
SYNTHETIC_DEFAULTS = dict(backbone="v3_small", alpha=0.5, input_size=160, epochs=6, global_batch_size=32,
                          optimizer="momentum", learning_rate=2.0, warmup_learning_rate=0.2, warmup_epochs=0.5,
                          bn_momentum=0.9, loss="focal", eval_every=1, shuffle_buffer=1000)
# --head ssd: ssd_mobilenet_v1_coco.config (batch 24, 200k steps, lr 0.004 at batch 24
# decayed x0.95 every 800,720 steps), lrs written at batch 512 as above.
SSD_REFERENCE_BATCH = 24
SSD_COCO_DEFAULTS = dict(backbone="v1", alpha=1.0, input_size=300, global_batch_size=SSD_REFERENCE_BATCH,
                         epochs=round(200_000 * SSD_REFERENCE_BATCH / COCO_TRAIN_IMAGES), optimizer="rmsprop",
                         learning_rate=0.004 * REFERENCE_BATCH / SSD_REFERENCE_BATCH, warmup_learning_rate=0.0,
                         warmup_epochs=0.0, bn_momentum=ssdlite.model.SSD_BN_MOMENTUM,
                         loss="sigmoid_hard_negative_mining", eval_every=5, shuffle_buffer=256)
# --head ssd on the synthetic scenes: V1 at width 0.25 (36M MAdds at 160, 2.5x the SSDLite
# preset's), the config's loss, SSDLite's synthetic schedule (deterministic, 6 epochs:
# AP50 0.611, AP 0.327; lr 1.0 or 2.0 gave AP50 0.417 / 0.415 after 3 epochs, 4.0 did not learn).
SSD_SYNTHETIC_DEFAULTS = dict(SYNTHETIC_DEFAULTS, backbone="v1", alpha=0.25, loss="sigmoid_hard_negative_mining")
TFLITE_FORMATS = deploy.QUANTIZATIONS


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate SSD detectors: SSDLite on MobileNet V2/V3 (V2/V3 papers 6.2), SSD 300 (V1 paper 4.6)."""

    # What a None field takes, by --dataset and --head (the help lists these values).
    PRESETS = {"coco": COCO_DEFAULTS, "synthetic": SYNTHETIC_DEFAULTS, "ssd coco": SSD_COCO_DEFAULTS,
               "ssd synthetic": SSD_SYNTHETIC_DEFAULTS}

    head: str = field("ssdlite", "ssdlite: depthwise-separable extra layers and predictors (V2/V3 papers) | ssd: "
                                 "regular convolutions, SSD 300 (V1 paper Table 13)", choices=list(ssdlite.model.HEADS))
    backbone: Optional[str] = field(None, "v1 | v2 | v3_large | v3_small (or another registry name with stride-16 "
                                          "and stride-32 maps)")
    alpha: Optional[float] = field(None, "backbone width multiplier")
    reduced_tail: Optional[bool] = field(None, "halve the last stage (the V3 paper's dagger rows)",
                                           default_text="yes for V3")
    dataset: Optional[str] = field(None, "synthetic | coco/2017 | coco/2014",
                                   choices=["synthetic", *data.COCO_DATASETS],
                                   default_text="coco/2017 with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir (COCO downloads itself there)")
    input_size: Optional[int] = field(None, "square input side")
    loss: Optional[str] = field(None, "focal (V3 config: sigmoid focal + smooth L1) | hard_negative_mining (SSD / "
                                      "V2 paper: softmax with 3:1 negatives) | sigmoid_hard_negative_mining (V1 "
                                      "SSD config: sigmoid with 3:1 negatives)", choices=list(losses.LOSSES))
    zoom_out: bool = field(False, "SSD's zoom-out (expansion) augmentation, for small objects")
    colour_jitter: bool = field(False, "SSD's photometric distortions")
    epochs: Optional[int] = field(None, "epochs (the COCO preset: the config's 400k steps at batch 512)")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training images / global batch")
    global_batch_size: Optional[int] = field(None, "batch over all replicas")
    optimizer: Optional[str] = field(None, "momentum: SGD, cosine decay to 0 after the warmup | rmsprop: RMSProp "
                                           "(rho 0.9, epsilon 1), x0.95 every --decay-epochs after a warmup from 0",
                                     choices=["momentum", "rmsprop"])
    learning_rate: Optional[float] = field(None, "peak lr at batch 512, scaled to --global-batch-size")
    warmup_learning_rate: Optional[float] = field(None, "warmup start lr at batch 512 (momentum)")
    warmup_epochs: Optional[float] = field(None, "linear warmup epochs (the COCO preset: the config's 2000 steps "
                                                "at batch 512)")
    decay_epochs: float = field(round(800_720 * SSD_REFERENCE_BATCH / COCO_TRAIN_IMAGES, 1),
                                "epochs between x0.95 decays (rmsprop; the V1 SSD config's 800,720 steps at batch 24)")
    momentum: float = field(0.9, "SGD / RMSProp momentum")
    weight_decay: float = field(ssdlite.model.WEIGHT_DECAY, "L2 on conv kernels (the config's l2_regularizer)")
    bn_momentum: Optional[float] = field(None, "BatchNormalization momentum")
    eval_every: Optional[int] = field(None, "COCO evaluation every N epochs and after the last")
    eval_examples: int = field(0, "evaluate on the first N validation images (0 = all)")
    eval_batch_size: int = field(16, "evaluation batch size")
    shuffle_buffer: Optional[int] = field(None, "examples in the shuffle buffer")
    display_threshold: float = field(0.3, "score threshold for detections.png (evaluation keeps all >= 1e-8)")
    synthetic_classes: int = field(5, "classes of the synthetic dataset, background included")
    synthetic_train_examples: int = field(2000, "synthetic training scenes per epoch")
    synthetic_eval_examples: int = field(200, "synthetic evaluation scenes")
    tflite: str = field("", "also export TFLite detectors: comma list of fp32, int8")
    tflite_nms: str = field("regular", "the TFLite detectors' NMS: regular (per class, as COCO evaluation expects) "
                                       "or fast (class-agnostic, one class per box: the TF Object Detection API's "
                                       "TFLite default)", choices=list(deploy.NMS))
    output_dir: str = field("runs/ssdlite", "run directory")
    weights: Optional[str] = field(None, "a .weights.h5 of the whole model to start from / evaluate")
    backbone_weights: Optional[str] = field(None, "'imagenet' or a backbone .weights.h5 (imagenet needs "
                                                  "--no-reduced-tail for V3)")


class SSDLiteCOCO(detection.COCODetectionRecipe):
    """Detection: SSDLite or SSD 300, COCO mAP every --eval-every epochs."""

    Config = Config
    at_least_one = ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer")
    tflite_formats, tflite_name = TFLITE_FORMATS, "detector"

    @classmethod
    def preset_label(cls, config):
        """--head ssd selects the "ssd ..." presets (the V1 SSD config's values)."""
        label = super().preset_label(config)  # "synthetic" or "coco"
        return label if config.head == "ssdlite" else f"ssd {label}"

    def synthetic_size(self):
        return self.config.input_size

    def build_model(self, backbone_weights=None):
        config = self.config
        return ssdlite.model.build_detector(
            config.head, config.backbone, num_classes=self.val_split.num_classes, input_size=config.input_size,
            alpha=config.alpha, reduced_tail=config.reduced_tail, backbone_weights=backbone_weights,
            weight_decay=config.weight_decay, bn_momentum=config.bn_momentum)

    def eval_pipeline(self, split, batch_size):
        return data.make_eval_pipeline(split, input_size=self.config.input_size, batch_size=batch_size)

    def prepare(self):
        self.activation = losses.ACTIVATIONS[self.config.loss]
        with self.strategy.scope():
            self.anchors = ssdlite.anchors_for(self.build_model())
        self.val_ds = self.eval_pipeline(self.val_split, self.config.eval_batch_size)
        self.evaluator = evaluation.COCOEvaluator(self.val_split, self.val_ds, self.activation)

    def build(self):
        config = self.config
        model = self.build_model(config.backbone_weights)
        if config.weights:
            model.load_weights(config.weights)
        optimizer = make_optimizer(config, self.steps_per_epoch)
        loss = {"boxes": losses.BoxLoss(), "classes": losses.ClassLoss(config.loss)}
        return model, optimizer, loss, []

    def train_dataset(self):
        config = self.config
        return data.make_train_pipeline(
            self.train_split, self.anchors, input_size=config.input_size, batch_size=config.global_batch_size,
            zoom_out=config.zoom_out, jitter=config.colour_jitter, shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic, seed=config.seed)

    def final_metrics(self, model, history):
        config = self.config
        return dict(super().final_metrics(model, history), head=config.head, input_size=config.input_size,
                    loss=config.loss)

    def write_outputs(self, model, metrics):
        super().write_outputs(model, metrics)
        if self.config.saved_model:
            deploy.save_detector(model, self.run.path("detector"), activation=self.activation)

    def calibration_images(self, split, count):
        shuffled = recipe.shuffled_split(split, count, self.config.seed, buffer=self.config.shuffle_buffer)
        return self.eval_pipeline(shuffled, 1).map(lambda images, info: images)

    def to_tflite(self, model, fmt, path, calibration, count):
        return deploy.to_tflite_detector(model, path, quantization=fmt, representative_images=calibration,
                                         activation=self.activation, calibration_steps=count,
                                         nms=self.config.tflite_nms)


def make_optimizer(config, steps_per_epoch):
    """``--optimizer momentum``: SGD, linear warmup then cosine decay to 0 (the SSDLite
    config); ``rmsprop``: RMSProp, x0.95 every ``--decay-epochs`` after a linear
    warmup from 0 (the V1 SSD config). Learning rates scaled from batch 512 to ours."""
    scale = config.global_batch_size / REFERENCE_BATCH
    if config.optimizer == "rmsprop":
        lr = schedules.WarmupStepDecay(config.learning_rate * scale, steps_per_epoch, 0.95, config.decay_epochs,
                                       config.warmup_epochs)
        return keras.optimizers.RMSprop(lr, rho=0.9, momentum=config.momentum, epsilon=1.0)
    return keras.optimizers.SGD(learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum)


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warmup then cosine decay to 0, lrs scaled from batch 512 to ours."""
    scale = config.global_batch_size / REFERENCE_BATCH
    return schedules.warmup_cosine(config.warmup_learning_rate * scale, config.learning_rate * scale, config.epochs,
                                   steps_per_epoch, config.warmup_epochs)


Config, resolve, main, get_args_parser, cli = recipe.script(SSDLiteCOCO)
COCOEvaluator = evaluation.COCOEvaluator  # where it lived before heads/ssdlite/evaluation.py

if __name__ == "__main__":
    cli()
