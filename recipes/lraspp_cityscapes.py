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
optionally TFLite files.
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import export  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.data import image_check  # noqa: E402
from mobilenet_tf.heads import lraspp  # noqa: E402
from mobilenet_tf.heads.lraspp import data, metrics as seg_metrics, visualize  # noqa: E402
from mobilenet_tf.training import config as config_lib, engine, schedules  # noqa: E402
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




def resolve(config):
    """Fill every None with the dataset's default; check inputs early.

    ``--data-dir`` without ``--dataset`` selects cityscapes (as in every recipe: the
    data dir means the recipe's real TFDS dataset); ``--dataset synthetic`` with
    ``--data-dir`` is refused.
    """
    if config.dataset is None:
        config = dataclasses.replace(config, dataset="cityscapes" if config.data_dir else "synthetic")
    elif config.dataset == "synthetic" and config.data_dir:
        raise ValueError(f"`--data-dir` {config.data_dir!r} selects a real TFDS dataset but `--dataset synthetic` "
                         "was given: drop --data-dir to train on synthetic data, or drop `--dataset synthetic` to read "
                         "cityscapes from it.")
    preset = {"synthetic": SYNTHETIC_DEFAULTS, "cityscapes": CITYSCAPES_DEFAULTS}.get(config.dataset, FOLDER_DEFAULTS)
    resolved = dataclasses.replace(config, **{key: value for key, value in preset.items()
                                              if getattr(config, key) is None})
    mobilenet_tf.registry.get_entry(resolved.backbone)  # unknown name -> ValueError
    if config.dataset == "folder":
        if not resolved.num_classes:
            raise ValueError("`--dataset folder` needs --num-classes (label values are 0..num_classes-1, 255 = ignore).")
        if not (resolved.images_dir or resolved.eval_only) or not (resolved.val_images_dir or resolved.images_dir):
            raise ValueError("`--dataset folder` needs --images-dir and --labels-dir (and optionally "
                             "--val-images-dir / --val-labels-dir).")
    if resolved.eval_height is None or resolved.eval_width is None:
        raise ValueError("`--dataset folder` needs --eval-height and --eval-width (multiples of the output stride): "
                         "the evaluation size, to which images are resized and labels resized by nearest neighbour.")
    if resolved.eval_only and not resolved.weights:
        raise ValueError("`--eval-only` needs --weights (a .weights.h5 of the whole model).")
    for name in ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer"):
        if getattr(resolved, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(resolved, name)}.")
    for name in ("crop_size", "eval_height", "eval_width"):
        value = getattr(resolved, name)
        if value % resolved.output_stride or value < 2 * resolved.output_stride:
            raise ValueError(f"`--{name.replace('_', '-')}` {value} must be a multiple of --output-stride "
                             f"{resolved.output_stride} (>= {2 * resolved.output_stride}); e.g. "
                             f"{max(2, round(value / resolved.output_stride)) * resolved.output_stride}.")
    if not 0 < resolved.scale_min <= resolved.scale_max:
        raise ValueError(f"need 0 < --scale-min <= --scale-max; got {resolved.scale_min}, {resolved.scale_max}.")
    export.parse_formats(resolved.tflite)
    return resolved


def load_splits(config):
    if config.dataset == "synthetic":
        size = max(config.crop_size, config.eval_height, config.eval_width)
        train = data.synthetic_split(True, config.synthetic_train_examples, size, config.synthetic_classes, config.seed)
        val = data.synthetic_split(False, config.synthetic_eval_examples, size, config.synthetic_classes, config.seed)
    elif config.dataset == "cityscapes":
        train = None if config.eval_only else data.cityscapes_split("train", config.data_dir)
        val = data.cityscapes_split("validation", config.data_dir)
    else:
        # Every image and label is decoded once first: unreadable or unpaired files are
        # skipped (listed in skipped_files.txt by main) or, with --strict-data, stop here.
        train = None if config.eval_only else data.folder_split(config.images_dir, config.labels_dir,
                                                                config.num_classes, strict=config.strict_data)
        val = data.folder_split(config.val_images_dir or config.images_dir,
                                config.val_labels_dir or config.labels_dir, config.num_classes,
                                strict=config.strict_data)
    return train, val


def build_model(config, num_classes, height, width, backbone_weights=None):
    return lraspp.build_lraspp(
        config.backbone, num_classes=num_classes, input_shape=(height, width, 3), alpha=config.alpha,
        output_stride=config.output_stride, reduced_tail=config.reduced_tail, filters=config.filters,
        pooling=config.pooling, pool_crop_size=(config.crop_size, config.crop_size), weights=backbone_weights)


class Evaluator:
    """Full-size evaluation of the training model: its weights are copied into a
    model built at the evaluation size (the paper's pooling kernel is fixed by the
    training crop; the evaluation image is larger), then a streaming confusion
    matrix gives mIoU over every labelled pixel. ``last_matrix`` keeps the latest
    result: training always evaluates its last epoch, and nothing changes the
    weights after it, so the final metrics reuse it instead of a second pass."""

    def __init__(self, config, num_classes, val_ds):
        self.model = build_model(config, num_classes, config.eval_height, config.eval_width)
        self.confusion = seg_metrics.ConfusionMatrix(self.model, num_classes)
        self.val_ds = val_ds
        self.last_matrix = None

    def matrix(self, trained):
        self.model.set_weights(trained.get_weights())
        self.last_matrix = self.confusion(self.val_ds)
        return self.last_matrix

    def __call__(self, trained):
        results = seg_metrics.scores(self.matrix(trained))
        return {"miou": results["miou"], "pixel_accuracy": results["pixel_accuracy"]}


def main(config):
    config = resolve(config)
    strategy, policy = engine.setup(config)
    train_split, val_split = load_splits(config)
    num_classes = val_split.num_classes
    run, chief = engine.open_run(config, strategy)
    check = image_check.merged(split.check for split in (train_split, val_split) if split is not None)
    if chief and check is not None:
        print(image_check.write_skipped(check, run.root), flush=True)

    val_ds = data.make_pipeline(val_split, training=False, batch_size=config.eval_batch_size,
                                eval_size=(config.eval_height, config.eval_width))
    evaluator = Evaluator(config, num_classes, val_ds)
    steps_per_epoch = config.steps_per_epoch or schedules.steps_for(
        train_split.num_examples if train_split else 1, config.global_batch_size)

    def build():
        model = build_model(config, num_classes, config.crop_size, config.crop_size, config.backbone_weights)
        if config.weights:
            model.load_weights(config.weights)
        schedules.add_weight_decay(model, config.weight_decay)
        schedules.configure_batchnorm(model, momentum=config.bn_momentum)
        lr = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch, end_learning_rate=0.0,
            power=config.poly_power)
        optimizer = keras.optimizers.SGD(lr, momentum=config.momentum)
        return model, optimizer, seg_metrics.ignore_label_crossentropy, [seg_metrics.mean_iou_metric(num_classes)]

    if config.eval_only:
        with strategy.scope():
            model = build()[0]
        history = {}
    else:
        train_ds = data.make_pipeline(
            train_split, training=True, batch_size=config.global_batch_size, crop_size=(config.crop_size,) * 2,
            scale_range=(config.scale_min, config.scale_max), shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic, seed=config.seed)
        model, history = engine.run_training(
            build=build, train_ds=train_ds, eval_ds=None, evaluate=evaluator, evaluate_every=config.eval_every,
            monitor="val_miou",
            epochs=config.epochs, steps_per_epoch=steps_per_epoch, eval_steps=None, run=run, strategy=strategy,
            global_batch_size=config.global_batch_size, jit_compile=config.jit_compile,
            sync_batchnorm=config.sync_batchnorm, verbose=config_lib.keras_verbose(config.verbose),
        )
    if not chief:
        return {}
    # None only when this process ran no epoch (--eval-only, or a resumed finished run).
    matrix = evaluator.last_matrix if evaluator.last_matrix is not None else evaluator.matrix(model)
    results = seg_metrics.scores(matrix, val_split.class_names)
    profile = mobilenet_tf.profile(evaluator.model)
    metrics = dict(
        results, **engine.throughput(history, steps_per_epoch, config.global_batch_size),
        backbone=config.backbone, alpha=config.alpha, output_stride=config.output_stride, dataset=config.dataset,
        crop_size=config.crop_size, eval_size=[config.eval_height, config.eval_width], num_classes=num_classes,
        params=profile.params, madds=profile.madds, precision_policy=policy, replicas=strategy.num_replicas_in_sync,
    )
    if history:
        engine.plot_history(history, run.path("curves.png"), metric="miou")
    save_predictions(evaluator.model, val_ds, run.path("predictions.png"), num_classes, config.dataset)
    engine.export_model(evaluator.model, run)
    for fmt in export.parse_formats(config.tflite):
        calibration = val_ds.map(lambda images, labels: images).unbatch().batch(1)
        export.to_tflite(evaluator.model, run.path(f"model_{fmt}.tflite"), export.FORMATS[fmt], calibration)
    engine.write_metrics(run, metrics)
    print(f"mIoU {results['miou']:.4f}  pixel accuracy {results['pixel_accuracy']:.4f}  ({metrics['epochs']} epochs, "
          f"{metrics['images_per_second']:.1f} img/s)  -> {run.root}")
    return metrics


def save_predictions(model, val_ds, path, num_classes, dataset):
    images, labels = next(iter(val_ds))
    predictions = np.argmax(model(images, training=False), axis=-1)
    palette = data.CITYSCAPES_PALETTE if dataset == "cityscapes" else None
    visualize.save_grid(np.asarray(images), np.asarray(labels), predictions, path, num_classes, palette)


def get_args_parser():
    return config_lib.get_args_parser(Config)


if __name__ == "__main__":
    engine.recipe_main(main, Config)
