"""Train and evaluate MobileNetV3 + LR-ASPP semantic segmentation (V3 paper 6.3).

    python recipes/lraspp_cityscapes.py                     # synthetic shapes, CPU, a few minutes, learns
    python recipes/lraspp_cityscapes.py --backbone v3_small --dataset cityscapes --data-dir ~/tensorflow_datasets \\
        --strategy auto --output-dir runs/seg
    python recipes/lraspp_cityscapes.py --eval-only --weights runs/seg/best.weights.h5 --backbone v3_small \\
        --dataset cityscapes --data-dir ~/tensorflow_datasets --output-dir runs/seg_eval
    python recipes/lraspp_cityscapes.py --dataset folder --images-dir img --labels-dir lbl --num-classes 5 \\
        --eval-height 512 --eval-width 512
    python recipes/lraspp_cityscapes.py --help

Flags left at None take the dataset's default: Cityscapes gets DeepLab's recipe
(see ``CITYSCAPES_DEFAULTS``), the synthetic set a small CPU setting. The run
directory gets config.json, checkpoints, TensorBoard logs, history.csv,
metrics.json (mIoU, pixel accuracy, per-class IoU), curves.png,
predictions.png, model.keras + saved_model/ at the evaluation size, and
optionally TFLite files (int8 calibrated on training images at the evaluation size:
``mobilenet_tf.training.recipe``'s rule).
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads import lraspp  # noqa: E402
from mobilenet_tf.heads.lraspp import data, evaluation, metrics as seg_metrics, visualize  # noqa: E402
from mobilenet_tf.training import config as config_lib, recipe, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

# The Cityscapes defaults. DeepLab publishes its MobileNetV3 model flags
# (g3doc/model_zoo.md) but not their training schedule, so these are DeepLab's
# Cityscapes recipe (g3doc/cityscapes.md: 769x769 crops, 90k steps; train.py:
# momentum-0.9 SGD, poly decay with power 0.9, weight decay 4e-5, random scale
# 0.5-2.0; backbone BN decay 0.997), with batch 16 under SyncBN (DeepLab advises
# more than 8 when BN is trained) and lr 0.01 for training from scratch at that
# batch (torchvision's segmentation reference). 500 epochs of 2975 images at
# batch 16 = 93k steps. Crops are 768, a multiple of the output stride.
CITYSCAPES_DEFAULTS = dict(backbone="v3_large", crop_size=768, eval_height=1024, eval_width=2048,
                           scale_min=0.5, scale_max=2.0, epochs=500, global_batch_size=16,
                           learning_rate=0.01, bn_momentum=0.997, eval_every=10, shuffle_buffer=64)
# What the synthetic default changes so that it learns on a CPU in minutes.
SYNTHETIC_DEFAULTS = dict(backbone="v3_small", crop_size=128, eval_height=128, eval_width=128,
                          scale_min=0.75, scale_max=1.5, epochs=4, global_batch_size=16,
                          learning_rate=0.05, bn_momentum=0.9, eval_every=1, shuffle_buffer=1000)
FOLDER_DEFAULTS = dict(CITYSCAPES_DEFAULTS, crop_size=512, eval_height=None, eval_width=None)


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate MobileNetV3 + LR-ASPP semantic segmentation (V3 paper 6.3)."""

    # What a None field takes, by --dataset (the help lists these values).
    PRESETS = {"cityscapes": CITYSCAPES_DEFAULTS, "folder": FOLDER_DEFAULTS, "synthetic": SYNTHETIC_DEFAULTS}

    backbone: Optional[str] = field(None, "backbone name")
    alpha: float = field(1.0, "backbone width multiplier")
    output_stride: int = field(16, "16 = last stage dilated (the paper's); 32 = not dilated", choices=[16, 32])
    reduced_tail: Optional[bool] = field(None, "halve the last stage (the paper's RF2)",
                                           default_text="yes for MobileNetV3, no for V1/V2")
    filters: int = field(128, "LR-ASPP branch filters (Table 7)", choices=[128, 256])
    pooling: str = field("paper", "paper (large-kernel average pooling) | global", choices=list(lraspp.model.POOLINGS))
    dataset: Optional[str] = field(None, "synthetic | cityscapes | folder",
                                   choices=["synthetic", "cityscapes", "folder"],
                                   default_text="cityscapes with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir; cityscapes needs DATA_DIR/downloads/manual/"
                                          "{leftImg8bit,gtFine}_trainvaltest.zip")
    images_dir: Optional[str] = field(None, "--dataset folder: training images")
    labels_dir: Optional[str] = field(None, "--dataset folder: training label PNGs (same file stems; values = "
                                            "class ids, 255 = ignore)")
    val_images_dir: Optional[str] = field(None, "--dataset folder: evaluation images")
    val_labels_dir: Optional[str] = field(None, "--dataset folder: evaluation label PNGs")
    num_classes: Optional[int] = field(None, "--dataset folder: number of classes")
    crop_size: Optional[int] = field(None, "square training crop, a multiple of the output stride")
    eval_height: Optional[int] = field(None, "evaluation input height; images are resized to it, labels by "
                                             "nearest neighbour")
    eval_width: Optional[int] = field(None, "evaluation input width")
    eval_every: Optional[int] = field(None, "evaluate every N epochs and after the last")
    scale_min: Optional[float] = field(None, "smallest random scale")
    scale_max: Optional[float] = field(None, "largest random scale")
    epochs: Optional[int] = field(None, "epochs (the Cityscapes preset: about 93k steps at batch 16, "
                                     "DeepLab's 90k)")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training examples / global batch")
    shuffle_buffer: Optional[int] = field(None, "decoded examples in the shuffle buffer (a Cityscapes example "
                                                "is 8 MB)")
    global_batch_size: Optional[int] = field(None, "batch over all replicas")
    learning_rate: Optional[float] = field(None, "initial lr of the poly schedule")
    poly_power: float = field(0.9, "poly decay power")
    momentum: float = field(0.9, "SGD momentum")
    weight_decay: float = field(4e-5, "L2 on conv kernels (slim's l2_regularizer scale)")
    bn_momentum: Optional[float] = field(None, "BatchNormalization momentum")
    synthetic_classes: int = field(5, "classes of the synthetic dataset, background included")
    synthetic_train_examples: int = field(1600, "synthetic training scenes per epoch")
    synthetic_eval_examples: int = field(200, "synthetic evaluation scenes")
    eval_batch_size: int = field(4, "evaluation batch size")
    tflite: str = field("", "also export TFLite: comma list of fp32, float16, dynamic, int8")
    output_dir: str = field("runs/lraspp", "run directory")
    weights: Optional[str] = field(None, "a .weights.h5 of the whole model to start from / evaluate")
    backbone_weights: Optional[str] = field(None, "'imagenet' or a backbone .weights.h5 (needs "
                                                  "--no-reduced-tail for imagenet; the paper trains from scratch)")


class LRASPPCityscapes(recipe.Recipe):
    """Segmentation: ignore-label cross-entropy, poly-decay SGD, full-size mIoU every --eval-every epochs."""

    Config = Config
    real_dataset = "cityscapes"
    at_least_one = ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer")
    monitor, plot_metric = "val_miou", "miou"

    @classmethod
    def validate(cls, config):
        mobilenet_tf.registry.get_entry(config.backbone)  # unknown name -> ValueError
        if config.dataset == "folder":
            if not config.num_classes:
                raise ValueError("`--dataset folder` needs --num-classes (label values are 0..num_classes-1, "
                                 "255 = ignore).")
            if not (config.images_dir or config.eval_only) or not (config.val_images_dir or config.images_dir):
                raise ValueError("`--dataset folder` needs --images-dir and --labels-dir (and optionally "
                                 "--val-images-dir / --val-labels-dir).")
        if config.eval_height is None or config.eval_width is None:
            raise ValueError("`--dataset folder` needs --eval-height and --eval-width (multiples of the output "
                             "stride): the evaluation size, to which images are resized and labels resized by "
                             "nearest neighbour.")
        return config

    @classmethod
    def resolve(cls, config):
        config = super().resolve(config)
        for name in ("crop_size", "eval_height", "eval_width"):
            value = getattr(config, name)
            if value % config.output_stride or value < 2 * config.output_stride:
                raise ValueError(f"`--{name.replace('_', '-')}` {value} must be a multiple of --output-stride "
                                 f"{config.output_stride} (>= {2 * config.output_stride}); e.g. "
                                 f"{max(2, round(value / config.output_stride)) * config.output_stride}.")
        if not 0 < config.scale_min <= config.scale_max:
            raise ValueError(f"need 0 < --scale-min <= --scale-max; got {config.scale_min}, {config.scale_max}.")
        return config

    synthetic_split = staticmethod(data.synthetic_split)

    def synthetic_size(self):
        return max(self.config.crop_size, self.config.eval_height, self.config.eval_width)

    def load_real_splits(self):
        config = self.config
        if config.dataset == "cityscapes":
            train = None if config.eval_only else data.cityscapes_split("train", config.data_dir)
            val = data.cityscapes_split("validation", config.data_dir)
        else:
            # Every image and label is decoded once first: unreadable or unpaired files are
            # skipped (listed in skipped_files.txt) or, with --strict-data, stop here.
            train = None if config.eval_only else data.folder_split(config.images_dir, config.labels_dir,
                                                                    config.num_classes, strict=config.strict_data)
            val = data.folder_split(config.val_images_dir or config.images_dir,
                                    config.val_labels_dir or config.labels_dir, config.num_classes,
                                    strict=config.strict_data)
        return train, val

    def build_model(self, height, width, backbone_weights=None):
        config = self.config
        return lraspp.build_lraspp(
            config.backbone, num_classes=self.val_split.num_classes, input_shape=(height, width, 3),
            alpha=config.alpha, output_stride=config.output_stride, reduced_tail=config.reduced_tail,
            filters=config.filters, pooling=config.pooling, pool_crop_size=(config.crop_size, config.crop_size),
            weights=backbone_weights)

    def eval_pipeline(self, split, batch_size):
        return data.make_pipeline(split, training=False, batch_size=batch_size,
                                  eval_size=(self.config.eval_height, self.config.eval_width))

    def prepare(self):
        self.eval_ds = None  # no Keras validation: the evaluator runs the full-size model
        self.val_ds = self.eval_pipeline(self.val_split, self.config.eval_batch_size)
        self.evaluator = evaluation.Evaluator(self.build_model(self.config.eval_height, self.config.eval_width),
                                              self.val_split.num_classes, self.val_ds)

    def build(self):
        config = self.config
        model = self.build_model(config.crop_size, config.crop_size, config.backbone_weights)
        if config.weights:
            model.load_weights(config.weights)
        schedules.add_weight_decay(model, config.weight_decay)
        schedules.configure_batchnorm(model, momentum=config.bn_momentum)
        lr = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, decay_steps=config.epochs * self.steps_per_epoch, end_learning_rate=0.0,
            power=config.poly_power)
        optimizer = keras.optimizers.SGD(lr, momentum=config.momentum)
        num_classes = self.val_split.num_classes
        return model, optimizer, seg_metrics.ignore_label_crossentropy, [seg_metrics.mean_iou_metric(num_classes)]

    def train_dataset(self):
        config = self.config
        return data.make_pipeline(
            self.train_split, training=True, batch_size=config.global_batch_size, crop_size=(config.crop_size,) * 2,
            scale_range=(config.scale_min, config.scale_max), shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic, seed=config.seed)

    def final_metrics(self, model, history):
        config = self.config
        self.results = seg_metrics.scores(self.evaluator.final_matrix(model), self.val_split.class_names)
        return dict(self.results, backbone=config.backbone, alpha=config.alpha, output_stride=config.output_stride,
                    dataset=config.dataset, crop_size=config.crop_size,
                    eval_size=[config.eval_height, config.eval_width], num_classes=self.val_split.num_classes)

    def deployed_model(self, model):
        return self.evaluator.model  # at the evaluation size, holding the trained weights

    def write_outputs(self, model, metrics):
        images, labels = next(iter(self.val_ds))
        predictions = np.argmax(self.evaluator.model(images, training=False), axis=-1)
        palette = data.CITYSCAPES_PALETTE if self.config.dataset == "cityscapes" else None
        visualize.save_grid(np.asarray(images), np.asarray(labels), predictions, self.run.path("predictions.png"),
                            self.val_split.num_classes, palette)

    def calibration_images(self, split, count):
        shuffled = recipe.shuffled_split(split, count, self.config.seed, buffer=self.config.shuffle_buffer)
        return self.eval_pipeline(shuffled, 1).map(lambda images, labels: images)

    def summary(self, metrics):
        return (f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}  "
                + super().summary(metrics))


Config, resolve, main, get_args_parser, cli = recipe.script(LRASPPCityscapes)

if __name__ == "__main__":
    cli()
