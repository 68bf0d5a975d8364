"""Train and evaluate a MobileNet image classifier (the papers' ImageNet recipe).

    python recipes/imagenet.py                      # synthetic data, CPU, a few minutes, learns
    python recipes/imagenet.py --model v3_large --dataset imagenet2012 --data-dir ~/tensorflow_datasets \\
        --strategy auto --mixed-precision --global-batch-size 4096 --output-dir runs/v3l
    python recipes/imagenet.py --model v3_small --alpha 0.75 --dataset imagenette --epochs 30
    python recipes/imagenet.py --eval-only --weights runs/v3l/best.weights.h5 --dataset imagenet2012 ...
    python recipes/imagenet.py --help

Flags left at their default (None) take the schedule's paper value (see
``mobilenet_tf.training.schedules``) or, for the synthetic dataset, a small CPU
setting. The run directory gets config.json, checkpoints, TensorBoard logs,
history.csv, metrics.json, curves.png, model.keras and a SavedModel; with
``--tflite fp32,int8`` also model_fp32.tflite / model_int8.tflite (int8:
post-training, calibrated on training images), each evaluated on the validation
set: metrics.json's "tflite" has every file's top-1, its top-1 agreement with the
Keras model and its bytes.
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import export  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.data import classification, image_check  # noqa: E402
from mobilenet_tf.training import config as config_lib, engine, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

# What the synthetic default changes so that it learns on a CPU in minutes.
SYNTHETIC_DEFAULTS = dict(image_size=64, epochs=3, global_batch_size=64, warmup_epochs=0.5, ema=0.9,
                          bn_momentum=0.9, crop_area_min=0.25)
REAL_DEFAULTS = dict(image_size=224, crop_area_min=0.08)


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate a MobileNet image classifier (the papers' ImageNet recipe)."""

    # What a None field takes, by dataset (the help lists these values).
    PRESETS = {"synthetic": SYNTHETIC_DEFAULTS, "real data": REAL_DEFAULTS}

    model: str = field("v3_small", "model name from mobilenet_tf.list_models() (MobileNets, SqueezeNet, "
                                   "ShuffleNet V1/V2, Xception)")
    alpha: float = field(1.0, "width multiplier")
    dataset: Optional[str] = field(None, "synthetic | folder | imagenet2012 | imagenette | any TFDS "
                                         "image-classification dataset",
                                   default_text="imagenet2012 with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir (imagenet2012: DATA_DIR/downloads/manual "
                                          "holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar)")
    train_dir: Optional[str] = field(None, "--dataset folder: training images, one subfolder per class")
    val_dir: Optional[str] = field(None, "--dataset folder: validation images, same class subfolders")
    image_size: Optional[int] = field(None, "input resolution")
    schedule: str = field("v3", "paper schedule", choices=sorted(schedules.SCHEDULES))
    epochs: Optional[int] = field(None, "epochs", default_text="the schedule's full run")
    global_batch_size: Optional[int] = field(None, "batch over all replicas",
                                                   default_text="the schedule's reference batch")
    learning_rate: Optional[float] = field(None, "peak lr at the schedule's reference batch, scaled linearly "
                                                 "to --global-batch-size", default_text="the schedule's")
    warmup_epochs: Optional[float] = field(None, "linear warmup epochs", default_text="the schedule's")
    ema: Optional[float] = field(None, "weight EMA momentum, 0 = off", default_text="the schedule's")
    label_smoothing: Optional[float] = field(None, "label smoothing", default_text="the schedule's")
    weight_decay: Optional[float] = field(None, "L2 on conv/dense kernels", default_text="the schedule's")
    dropout: Optional[float] = field(None, "dropout before the classifier", default_text="the schedule's")
    bn_momentum: Optional[float] = field(None, "BatchNormalization moving-average momentum (the synthetic "
                                               "preset's is lower so that short runs evaluate well)",
                                         default_text="the schedule's")
    crop_area_min: Optional[float] = field(None, "smallest random-crop area")
    synthetic_classes: int = field(10, "classes of the synthetic dataset")
    synthetic_train_examples: int = field(3840, "synthetic training images per epoch")
    synthetic_eval_examples: int = field(1000, "synthetic evaluation images")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training examples / global batch")
    steps_per_execution: int = field(1, "train steps per tf.function call")
    tflite: str = field("", "also export and evaluate TFLite: comma list of fp32, float16, dynamic, int8")
    calibration_images: int = field(200, "int8 TFLite: training images to calibrate activation ranges on")
    output_dir: str = field("runs/imagenet", "run directory")
    weights: Optional[str] = field(None, "'imagenet' or a .weights.h5 file to start from / evaluate")


def resolve(config):
    """Fill every None with the schedule's value or the dataset's default; check inputs.

    ``--data-dir`` without ``--dataset`` selects imagenet2012 (as in every recipe:
    the data dir means the recipe's real TFDS dataset); ``--dataset synthetic``
    with ``--data-dir`` is refused.
    """
    if config.dataset is None:
        config = dataclasses.replace(config, dataset="imagenet2012" if config.data_dir else "synthetic")
    elif config.dataset == "synthetic" and config.data_dir:
        raise ValueError(f"`--data-dir` {config.data_dir!r} selects a real TFDS dataset but `--dataset synthetic` "
                         "was given: drop --data-dir to train on synthetic data, or drop `--dataset synthetic` to read "
                         "imagenet2012 from it (or name another TFDS dataset).")
    mobilenet_tf.registry.get_entry(config.model)  # unknown model -> ValueError
    if config.alpha != 1.0 and not mobilenet_tf.registry.accepts(config.model, "alpha"):
        raise ValueError(f"`--alpha` applies to the MobileNets; {config.model!r} has its width in its name "
                         "(e.g. shufflenet_v2_x0_5) or none.")
    schedule = schedules.get_schedule(config.schedule)
    preset = SYNTHETIC_DEFAULTS if config.dataset == "synthetic" else REAL_DEFAULTS
    defaults = dict(
        epochs=schedule.epochs, global_batch_size=schedule.reference_batch, warmup_epochs=schedule.warmup_epochs,
        ema=schedule.ema, label_smoothing=schedule.label_smoothing, weight_decay=schedule.weight_decay,
        dropout=schedule.dropout, learning_rate=schedule.base_lr, bn_momentum=schedule.bn_momentum,
    )
    defaults.update(preset)
    resolved = dataclasses.replace(config, **{
        key: value for key, value in defaults.items() if getattr(config, key) is None})
    if config.dataset == "folder" and not (config.train_dir or config.eval_only):
        raise ValueError("`--dataset folder` needs --train-dir (and --val-dir) with one subfolder per class.")
    if resolved.eval_only and not resolved.weights:
        raise ValueError("`--eval-only` needs --weights (a .weights.h5 file or 'imagenet').")
    for name in ("epochs", "global_batch_size", "image_size", "steps_per_execution", "calibration_images"):
        if getattr(resolved, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(resolved, name)}.")
    if not 0 <= resolved.ema < 1:
        raise ValueError(f"`--ema` must be in [0, 1); got {resolved.ema}.")
    export.parse_formats(resolved.tflite)
    return resolved


def load_splits(config):
    if config.dataset == "synthetic":
        train = classification.synthetic_split(True, config.synthetic_train_examples, config.image_size,
                                               config.synthetic_classes, config.seed)
        val = classification.synthetic_split(False, config.synthetic_eval_examples, config.image_size,
                                             config.synthetic_classes, config.seed)
    elif config.dataset == "folder":
        # Every file is decoded once first: unreadable ones are skipped (listed in
        # skipped_files.txt by main) or, with --strict-data, stop the run here.
        train = classification.folder_split(config.train_dir, strict=config.strict_data) \
            if config.train_dir else None
        names = train.class_names if train else None
        val = classification.folder_split(config.val_dir or config.train_dir, names, strict=config.strict_data)
    else:
        train = None if config.eval_only else classification.tfds_split(config.dataset, "train", config.data_dir)
        val = classification.tfds_split(config.dataset, "validation", config.data_dir)
    return train, val


def main(config):
    config = resolve(config)
    strategy, policy = engine.setup(config)
    train_split, val_split = load_splits(config)
    num_classes = val_split.num_classes
    run, chief = engine.open_run(config, strategy)
    check = image_check.merged(split.check for split in (train_split, val_split) if split is not None)
    if chief and check is not None:
        print(image_check.write_skipped(check, run.root), flush=True)

    one_hot = lambda x, y: (x, tf.one_hot(y, num_classes))
    pipeline = dict(batch_size=config.global_batch_size, image_size=config.image_size,
                    area_range=(config.crop_area_min, 1.0), deterministic=config.deterministic, seed=config.seed)
    val_ds = classification.make_pipeline(val_split, training=False, **pipeline).map(one_hot)
    eval_steps = schedules.steps_for(val_split.num_examples, config.global_batch_size)
    schedule = schedules.get_schedule(config.schedule)
    steps_per_epoch = config.steps_per_epoch or schedules.steps_for(
        train_split.num_examples if train_split else 1, config.global_batch_size)

    def smoothed_crossentropy(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=config.label_smoothing)

    def build():
        model = mobilenet_tf.build(
            config.model, input_shape=(config.image_size, config.image_size, 3), classes=num_classes,
            include_preprocessing=True, dropout_rate=config.dropout, weights=config.weights,
            **mobilenet_tf.registry.options_for(config.model, alpha=config.alpha),
        )
        schedules.add_weight_decay(model, config.weight_decay)
        schedules.configure_batchnorm(model, momentum=config.bn_momentum)
        peak_lr = schedules.scaled_lr(schedule, config.global_batch_size, config.learning_rate)
        optimizer = schedules.make_optimizer(schedule, peak_lr=peak_lr, steps_per_epoch=steps_per_epoch,
                                             warmup_epochs=config.warmup_epochs, ema=config.ema)
        metrics = [keras.metrics.CategoricalAccuracy(name="top1"),
                   keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")]
        return model, optimizer, smoothed_crossentropy, metrics

    verbose = config_lib.keras_verbose(config.verbose)
    if config.eval_only:
        with strategy.scope():
            model, _, loss, metrics = build()
            model.compile(loss=loss, metrics=metrics)
        history = {}
    else:
        train_ds = classification.make_pipeline(train_split, training=True, **pipeline).map(one_hot)
        model, history = engine.run_training(
            build=build, train_ds=train_ds, eval_ds=val_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
            eval_steps=eval_steps, run=run, strategy=strategy, global_batch_size=config.global_batch_size,
            ema=config.ema > 0, jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution,
            sync_batchnorm=config.sync_batchnorm, verbose=verbose,
        )
    if not chief:
        return {}
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        top1, top5 = history["val_top1"][-1], history["val_top5"][-1]
    else:
        results = model.evaluate(val_ds, steps=eval_steps, verbose=0, return_dict=True)
        top1, top5 = results["top1"], results["top5"]
    profile = mobilenet_tf.profile(model)
    metrics = dict(
        top1=top1, top5=top5, **engine.throughput(history, steps_per_epoch, config.global_batch_size),
        model=config.model, alpha=config.alpha, dataset=config.dataset, image_size=config.image_size,
        num_classes=num_classes, params=profile.params, madds=profile.madds, precision_policy=policy,
        replicas=strategy.num_replicas_in_sync,
    )
    if history:
        engine.plot_history(history, run.path("curves.png"))
    engine.export_model(model, run)
    formats = export.parse_formats(config.tflite)
    if formats:
        # Calibrate on shuffled training images as evaluated (center crop; a folder split
        # lists its images class by class); --eval-only on TFDS has no training split and
        # calibrates on validation images.
        source = train_split or val_split
        shuffled = dataclasses.replace(source, dataset=source.dataset.shuffle(10 * config.calibration_images,
                                                                              seed=config.seed))
        calibration = classification.make_pipeline(shuffled, training=False, batch_size=1,
                                                   image_size=config.image_size)
        calibration = calibration.map(lambda image, label: image)
        paths = {fmt: export.to_tflite(model, run.path(f"model_{fmt}.tflite"), export.FORMATS[fmt], calibration,
                                       calibration_steps=config.calibration_images) for fmt in formats}
        metrics["tflite"] = evaluate_tflite(paths, model, val_ds, eval_steps)
        for fmt, result in metrics["tflite"].items():
            print(f"{fmt} TFLite: top-1 {result['top1']:.4f}, agrees with Keras on {result['agreement']:.4f}, "
                  f"{result['bytes']} bytes")
    engine.write_metrics(run, metrics)
    print(f"top-1 {top1:.4f}  top-5 {top5:.4f}  ({metrics['epochs']} epochs, {metrics['images_per_second']:.0f} img/s)"
          f"  -> {run.root}")
    return metrics


def evaluate_tflite(paths, model, val_ds, steps, batch_size=64):
    """.tflite classifiers ({format: path}) on ``steps`` batches of ``val_ds`` (images,
    one-hot labels), one pass with the Keras model run once per image, fed
    ``batch_size`` images at a time (an interpreter allocates for the whole batch):
    {format: {"top1", "agreement" (share of images where its top-1 is the Keras
    model's), "bytes"}}."""
    files = {fmt: export.TFLiteModel(path) for fmt, path in paths.items()}
    hits, agreements, seen = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0), 0
    for images, one_hot in val_ds.take(steps).unbatch().batch(batch_size):
        labels, reference = np.argmax(one_hot, -1), np.argmax(model(images, training=False), -1)
        for fmt, tflite in files.items():
            predicted = np.argmax(tflite(images), -1)
            hits[fmt] += int(np.sum(predicted == labels))
            agreements[fmt] += int(np.sum(predicted == reference))
        seen += len(labels)
    return {fmt: dict(top1=hits[fmt] / seen, agreement=agreements[fmt] / seen, bytes=os.path.getsize(path))
            for fmt, path in paths.items()}


def get_args_parser():
    return config_lib.get_args_parser(Config)


if __name__ == "__main__":
    engine.recipe_main(main, Config)
