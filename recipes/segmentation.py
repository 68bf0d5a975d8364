"""Train and evaluate semantic segmentation: LR-ASPP (V3 paper 6.3), R-ASPP and DeepLabv3's
ASPP (V2 paper 6.3) on Cityscapes, PASCAL VOC 2012, a folder of label PNGs or synthetic shapes.

    python recipes/segmentation.py                          # synthetic shapes, LR-ASPP, CPU, a few minutes, learns
    python recipes/segmentation.py --head raspp             # the same with R-ASPP (or aspp)
    python recipes/segmentation.py --backbone v3_small --dataset cityscapes --data-dir ~/tensorflow_datasets \\
        --strategy auto --output-dir runs/seg
    python recipes/segmentation.py --dataset voc --data-dir ~/data/VOCdevkit --voc-augmented --eval-mf \\
        --output-dir runs/voc                               # DeepLab's MobileNetV2 R-ASPP on VOC (V2 Table 7)
    python recipes/segmentation.py --eval-only --weights runs/seg/best.weights.h5 --backbone v3_small \\
        --dataset cityscapes --data-dir ~/tensorflow_datasets --output-dir runs/seg_eval
    python recipes/segmentation.py --dataset folder --images-dir img --labels-dir lbl --num-classes 5 \\
        --eval-height 512 --eval-width 512
    python recipes/segmentation.py --help

(``recipes/lraspp_cityscapes.py`` is this script under its first name.) Flags left at
None take the dataset's default: Cityscapes gets DeepLab's recipe (see
``CITYSCAPES_DEFAULTS``), VOC DeepLab's VOC recipe (``VOC_DEFAULTS``), the synthetic
set a small CPU setting. The run directory gets config.json, checkpoints, TensorBoard
logs, history.csv, metrics.json (mIoU, pixel accuracy, per-class IoU; with
``--eval-mf`` also multi-scale + flip), curves.png, predictions.png, model.keras +
saved_model/ at the evaluation size, and optionally TFLite files (int8 calibrated on
training images at the evaluation size: ``mobilenet_tf.training.recipe``'s rule).
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads import segmentation  # noqa: E402
from mobilenet_tf.heads.segmentation import data, evaluation, metrics as seg_metrics, multiscale  # noqa: E402
from mobilenet_tf.heads.segmentation import visualize  # noqa: E402
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
CITYSCAPES_DEFAULTS = dict(backbone="v3_large", head="lraspp", crop_size=768, eval_height=1024, eval_width=2048,
                           scale_min=0.5, scale_max=2.0, epochs=500, global_batch_size=16,
                           learning_rate=0.01, bn_momentum=0.997, eval_every=10, shuffle_buffer=64)
# What the synthetic default changes so that it learns on a CPU in minutes.
# ASPP's rates scaled to its 8x8 maps (DeepLab's 6,12,18 are for the 33x33 maps of 513 crops).
SYNTHETIC_DEFAULTS = dict(backbone="v3_small", head="lraspp", atrous_rates="1,2,3", crop_size=128, eval_height=128,
                          eval_width=128, scale_min=0.75, scale_max=1.5, epochs=4, global_batch_size=16,
                          learning_rate=0.05, bn_momentum=0.9, eval_every=1, shuffle_buffer=1000)
# PASCAL VOC 2012: DeepLab's MobileNetV2 model (the V2 paper's Table 7 row in bold: R-ASPP
# on the 320-channel map "V2*", output stride 16) with DeepLabv3's VOC schedule (paper
# section 4: crop 513, batch 16, lr 0.007 with poly decay, 30k steps on train_aug;
# train.py: weight decay 4e-5, random scale 0.5-2.0, BN decay 0.9997); evaluation on
# the whole image padded to the crop, as DeepLab's eval.py does. Crops are 512, a
# multiple of the output stride. 45 epochs of train_aug's 10,582 images = 30k steps.
VOC_DEFAULTS = dict(backbone="v2", head="raspp", feature="C5_block", crop_size=512, eval_height=512, eval_width=512,
                    scale_min=0.5, scale_max=2.0, epochs=45, global_batch_size=16, learning_rate=0.007,
                    bn_momentum=0.9997, eval_every=5, shuffle_buffer=256)
FOLDER_DEFAULTS = dict(CITYSCAPES_DEFAULTS, crop_size=512, eval_height=None, eval_width=None)
EVAL_PAD = ("voc",)  # datasets evaluated padded to the evaluation size (else resized to it)


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate semantic segmentation: LR-ASPP, R-ASPP or ASPP on a MobileNet (V3 / V2 papers)."""

    # What a None field takes, by --dataset (the help lists these values).
    PRESETS = {"cityscapes": CITYSCAPES_DEFAULTS, "voc": VOC_DEFAULTS, "folder": FOLDER_DEFAULTS,
               "synthetic": SYNTHETIC_DEFAULTS}

    backbone: Optional[str] = field(None, "backbone name")
    alpha: float = field(1.0, "backbone width multiplier")
    head: Optional[str] = field(None, "lraspp (V3 paper) | raspp (reduced ASPP, V2 paper) | aspp (DeepLabv3)",
                                choices=list(segmentation.HEADS))
    feature: Optional[str] = field(None, "the backbone endpoint the head sits on; C5_block = V2 / V3's last "
                                         "block before the final 1x1 conv (the V2 paper's V2*)",
                                   default_text="the last (C5)")
    atrous_rates: Optional[str] = field(None, "--head aspp: rates of the 3x3 branches, a comma list "
                                              "(DeepLab's --atrous_rates)",
                                        default_text="6,12,18 at output stride 16, 12,24,36 at 8")
    output_stride: int = field(16, "16 = last stage dilated (the papers'); 8 = the last two (R-ASPP / ASPP); "
                                   "32 = not dilated", choices=[8, 16, 32])
    reduced_tail: Optional[bool] = field(None, "halve the last stage (the V3 paper's RF2)",
                                           default_text="yes for MobileNetV3, no for V1/V2")
    filters: Optional[int] = field(None, "head filters (V3 Table 7)", choices=[128, 256],
                                   default_text="128 for lraspp, 256 for raspp / aspp")
    pooling: str = field("paper", "paper (large-kernel average pooling) | global",
                         choices=list(segmentation.model.POOLINGS))
    dataset: Optional[str] = field(None, "synthetic | cityscapes | voc | folder",
                                   choices=["synthetic", "cityscapes", "voc", "folder"],
                                   default_text="cityscapes with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir; cityscapes needs DATA_DIR/downloads/manual/"
                                          "{leftImg8bit,gtFine}_trainvaltest.zip; voc: the folder holding "
                                          "VOCdevkit/VOC2012")
    voc_augmented: bool = field(False, "--dataset voc: train on the SBD augmented labels (SegmentationClassAug, "
                                       "list train_aug.txt), as DeepLab does")
    eval_mf: bool = field(False, "also evaluate with multi-scale (0.5-1.75) + flip inference (the V2 paper's MF)")
    images_dir: Optional[str] = field(None, "--dataset folder: training images")
    labels_dir: Optional[str] = field(None, "--dataset folder: training label PNGs (same file stems; values = "
                                            "class ids, 255 = ignore)")
    val_images_dir: Optional[str] = field(None, "--dataset folder: evaluation images")
    val_labels_dir: Optional[str] = field(None, "--dataset folder: evaluation label PNGs")
    num_classes: Optional[int] = field(None, "--dataset folder: number of classes")
    crop_size: Optional[int] = field(None, "square training crop, a multiple of the output stride")
    eval_height: Optional[int] = field(None, "evaluation input height; images are resized to it, labels by "
                                             "nearest neighbour (voc: padded to it, as DeepLab)")
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
    output_dir: str = field("runs/segmentation", "run directory")
    weights: Optional[str] = field(None, "a .weights.h5 of the whole model to start from / evaluate")
    backbone_weights: Optional[str] = field(None, "'imagenet' or a backbone .weights.h5 (needs "
                                                  "--no-reduced-tail for imagenet; the paper trains from scratch)")


class Segmentation(recipe.Recipe):
    """Segmentation: ignore-label cross-entropy, poly-decay SGD, full-size mIoU every --eval-every epochs."""

    Config = Config
    real_dataset = "cityscapes"
    at_least_one = ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer")
    monitor, plot_metric = "val_miou", "miou"

    @classmethod
    def validate(cls, config):
        record = mobilenet_tf.registry.get_entry(config.backbone)  # unknown name -> ValueError
        strides = segmentation.model.OUTPUT_STRIDES[config.head]
        if config.output_stride not in strides:
            raise ValueError(f"`--output-stride` {config.output_stride} does not apply to --head {config.head} "
                             f"(it takes {strides}).")
        endpoints = [info.name for info in record.feature_info()] if record.features else []
        if config.feature is not None and config.feature not in endpoints:
            raise ValueError(f"`--feature` {config.feature!r} is not an endpoint of {config.backbone!r}; it has "
                             f"{endpoints} (C5_block: V2 / V3 only).")
        parse_atrous_rates(config.atrous_rates)  # a bad list -> ValueError
        if config.dataset == "voc" and not config.data_dir:
            raise ValueError(f"`--dataset voc` needs --data-dir. {data.VOC_HELP}")
        if config.dataset != "voc" and config.voc_augmented:
            raise ValueError("`--voc-augmented` applies to --dataset voc.")
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
        elif config.dataset == "voc":
            labels = data.VOC_AUGMENTED_LABELS if config.voc_augmented else data.VOC_LABELS
            train = None if config.eval_only else data.voc_split(
                config.data_dir, "train_aug" if config.voc_augmented else "train", labels, strict=config.strict_data)
            val = data.voc_split(config.data_dir, "val", strict=config.strict_data)
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
        return segmentation.build_segmentation(
            config.backbone, config.head, num_classes=self.val_split.num_classes, input_shape=(height, width, 3),
            alpha=config.alpha, output_stride=config.output_stride, reduced_tail=config.reduced_tail,
            filters=config.filters, feature=config.feature, atrous_rates=self.atrous_rates(), pooling=config.pooling,
            pool_crop_size=(config.crop_size, config.crop_size), weights=backbone_weights)

    def atrous_rates(self):
        """ASPP's rates from --atrous-rates (None: the head's default for the output stride)."""
        return parse_atrous_rates(self.config.atrous_rates) if self.config.head == "aspp" else None

    def eval_pipeline(self, split, batch_size):
        return data.make_pipeline(split, training=False, batch_size=batch_size,
                                  eval_size=(self.config.eval_height, self.config.eval_width),
                                  eval_pad=self.config.dataset in EVAL_PAD)

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
        names, num_classes = self.val_split.class_names, self.val_split.num_classes
        self.results = seg_metrics.scores(self.evaluator.final_matrix(model), names)
        metrics = dict(self.results, backbone=config.backbone, alpha=config.alpha, head=config.head,
                       feature=config.feature, output_stride=config.output_stride, dataset=config.dataset,
                       crop_size=config.crop_size, eval_size=[config.eval_height, config.eval_width],
                       num_classes=num_classes)
        if config.eval_mf:  # the V2 paper's "MF": DeepLab's scales and flips, probabilities averaged
            mf = multiscale.MultiScaleFlip(self.build_model, multiple=config.output_stride)
            mf.prepare(config.eval_height, config.eval_width).set_weights(model)
            mf_scores = seg_metrics.scores(seg_metrics.ConfusionMatrix(mf, num_classes)(self.val_ds), names)
            metrics["mf"] = dict(mf_scores, scales=list(mf.scales), flip=mf.flip)
        return metrics

    def deployed_model(self, model):
        return self.evaluator.model  # at the evaluation size, holding the trained weights

    def write_outputs(self, model, metrics):
        images, labels = next(iter(self.val_ds))
        predictions = np.argmax(self.evaluator.model(images, training=False), axis=-1)
        palette = {"cityscapes": data.CITYSCAPES_PALETTE, "voc": data.voc_palette()}.get(self.config.dataset)
        visualize.save_grid(np.asarray(images), np.asarray(labels), predictions, self.run.path("predictions.png"),
                            self.val_split.num_classes, palette)

    def calibration_images(self, split, count):
        shuffled = recipe.shuffled_split(split, count, self.config.seed, buffer=self.config.shuffle_buffer)
        return self.eval_pipeline(shuffled, 1).map(lambda images, labels: images)

    def summary(self, metrics):
        mf = f"  multi-scale + flip mIoU {metrics['mf']['miou']:.4f}" if "mf" in metrics else ""
        return (f"mIoU {metrics['miou']:.4f}{mf}  pixel accuracy {metrics['pixel_accuracy']:.4f}  "
                + super().summary(metrics))


def parse_atrous_rates(text):
    """"6,12,18" -> (6, 12, 18); None -> None; ``ValueError`` for anything but positive integers."""
    if text is None:
        return None
    try:
        rates = tuple(int(rate) for rate in text.split(","))
    except ValueError:
        rates = ()
    if not rates or min(rates) < 1:
        raise ValueError(f"`--atrous-rates` must be positive integers separated by commas, e.g. 6,12,18; "
                         f"got {text!r}.")
    return rates


Config, resolve, main, get_args_parser, cli = recipe.script(Segmentation)

if __name__ == "__main__":
    cli()
