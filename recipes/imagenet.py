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
post-training, calibrated on shuffled training images as evaluated:
``mobilenet_tf.training.recipe``'s rule), each evaluated on the validation
set: metrics.json's "tflite" has every file's top-1, its top-1 agreement with the
Keras model and its bytes.
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import evaluation  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.data import augment, classification  # noqa: E402
from mobilenet_tf.training import config as config_lib, recipe, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

# What the synthetic default changes so that it learns on a CPU in minutes.
# No RandAugment / mixup on it: 3 epochs of the synthetic shapes need no regularisation.
SYNTHETIC_DEFAULTS = dict(image_size=64, epochs=3, global_batch_size=64, warmup_epochs=0.5, ema=0.9,
                          bn_momentum=0.9, crop_area_min=0.25, randaugment=0.0, mix_prob=0.0)
REAL_DEFAULTS = dict(image_size=224, crop_area_min=0.08)
# AdamW schedules (MobileNetV4) on the synthetic default: their lr is not scaled with the batch, and
# at batch 64 for 3 epochs 4e-3 learns (v4_conv_small seeds 0 / 1: top-1 0.986 / 0.968; at the
# config's 2e-3: 0.934 / 0.900, before its BN epsilon 1e-6).
SYNTHETIC_ADAMW_LR = 4e-3


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate a MobileNet image classifier (the papers' ImageNet recipe)."""

    # What a None field takes, by dataset (the help lists these values).
    PRESETS = {"synthetic": SYNTHETIC_DEFAULTS, "real data": REAL_DEFAULTS}

    model: str = field("v3_small", "model name from mobilenet_tf.list_models() (MobileNets V1-V4, SqueezeNet, "
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
    schedule: Optional[str] = field(None, "paper schedule", choices=sorted(schedules.SCHEDULES),
                                    default_text="the model's own (v4_*: Model Garden's config), else v3")
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
    stochastic_depth: Optional[float] = field(None, "MobileNetV4: stochastic depth rate of the last block (Model "
                                                    "Garden's rule: linear along the table; attention blocks, and "
                                                    "every block of v4_conv_large's schedule, at this rate)",
                                              default_text="the schedule's")
    randaugment: Optional[float] = field(None, "RandAugment magnitude (Model Garden's policy and 0-10 scale: "
                                               "two ops per image); 0 = off", default_text="the schedule's")
    mix_prob: Optional[float] = field(None, "probability that a training batch gets mixup or cutmix (Model "
                                            "Garden's per-batch switch); 0 = off", default_text="the schedule's")
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


class ImageNet(recipe.Recipe):
    """Classification: cross-entropy with label smoothing, top-1 / top-5, the schedule's optimizer."""

    Config = Config
    real_dataset = "imagenet2012"
    real_dataset_note = " (or name another TFDS dataset)"
    at_least_one = ("epochs", "global_batch_size", "image_size", "steps_per_execution", "calibration_images")
    weights_text = "a .weights.h5 file or 'imagenet'"
    compile_for_eval = True

    @classmethod
    def preset(cls, config):
        """The schedule's paper values, overridden by the dataset's preset."""
        schedule = schedules.get_schedule(config.schedule or schedules.default_schedule(config.model))
        defaults = dict(
            schedule=schedule.name, stochastic_depth=schedule.stochastic_depth, epochs=schedule.epochs,
            global_batch_size=schedule.reference_batch, warmup_epochs=schedule.warmup_epochs, ema=schedule.ema,
            label_smoothing=schedule.label_smoothing, weight_decay=schedule.weight_decay, dropout=schedule.dropout,
            learning_rate=schedule.base_lr, bn_momentum=schedule.bn_momentum, randaugment=schedule.randaugment,
            mix_prob=schedule.mix_prob,
        )
        defaults.update(SYNTHETIC_DEFAULTS if config.dataset == "synthetic" else REAL_DEFAULTS)
        if config.dataset == "synthetic" and schedule.optimizer == "adamw":
            defaults["learning_rate"] = SYNTHETIC_ADAMW_LR
        return defaults

    @classmethod
    def validate(cls, config):
        mobilenet_tf.registry.get_entry(config.model)  # unknown model -> ValueError
        if config.alpha != 1.0 and not mobilenet_tf.registry.accepts(config.model, "alpha"):
            raise ValueError(f"`--alpha` applies to the MobileNets; {config.model!r} has its width in its name "
                             "(e.g. shufflenet_v2_x0_5) or none.")
        if config.dataset == "folder" and not (config.train_dir or config.eval_only):
            raise ValueError("`--dataset folder` needs --train-dir (and --val-dir) with one subfolder per class.")
        if not 0 <= config.ema < 1:
            raise ValueError(f"`--ema` must be in [0, 1); got {config.ema}.")
        if config.randaugment < 0:
            raise ValueError(f"`--randaugment` must be >= 0 (0 = off); got {config.randaugment}.")
        if not 0 <= config.mix_prob <= 1:
            raise ValueError(f"`--mix-prob` must be in [0, 1] (0 = off); got {config.mix_prob}.")
        if config.stochastic_depth and not mobilenet_tf.registry.accepts(config.model, "stochastic_depth_rate"):
            raise ValueError(f"`--stochastic-depth` applies to MobileNetV4 (v4_*); {config.model!r} has no "
                             "stochastic depth: leave it out or pass 0.")
        return config

    synthetic_split = staticmethod(classification.synthetic_split)

    def load_real_splits(self):
        config = self.config
        if config.dataset == "folder":
            # Every file is decoded once first: unreadable ones are skipped (listed in
            # skipped_files.txt) or, with --strict-data, stop the run here.
            train = classification.folder_split(config.train_dir, strict=config.strict_data) \
                if config.train_dir else None
            names = train.class_names if train else None
            val = classification.folder_split(config.val_dir or config.train_dir, names, strict=config.strict_data)
        else:
            train = None if config.eval_only else classification.tfds_split(config.dataset, "train", config.data_dir)
            val = classification.tfds_split(config.dataset, "validation", config.data_dir)
        return train, val

    def pipeline(self, split, training, batch_size=None):
        """``split`` as (images, one-hot labels) batches (global batch by default); in
        training with the schedule's RandAugment and mixup / cutmix (soft labels)."""
        config, num_classes = self.config, self.val_split.num_classes
        schedule = schedules.get_schedule(config.schedule)
        randaugment = augment.RandAugment(config.randaugment, prob_to_apply=schedule.randaugment_prob,
                                          translate_const=schedule.randaugment_translate, seed=config.seed + 3) \
            if training and config.randaugment > 0 else None
        ds = classification.make_pipeline(
            split, training=training, batch_size=batch_size or config.global_batch_size,
            image_size=config.image_size, area_range=(config.crop_area_min, 1.0), deterministic=config.deterministic,
            seed=config.seed, augment=randaugment).map(lambda x, y: (x, tf.one_hot(y, num_classes)))
        if training and config.mix_prob > 0:
            ds = ds.map(augment.MixupCutmix(prob=config.mix_prob, seed=config.seed + 4))
        return ds

    def prepare(self):
        self.eval_ds = self.pipeline(self.val_split, training=False)
        self.eval_steps = schedules.steps_for(self.val_split.num_examples, self.config.global_batch_size)
        self.ema = self.config.ema > 0

    def build(self):
        config = self.config
        schedule = schedules.get_schedule(config.schedule)
        model = mobilenet_tf.build(
            config.model, input_shape=(config.image_size, config.image_size, 3), classes=self.val_split.num_classes,
            include_preprocessing=True, dropout_rate=config.dropout, weights=config.weights,
            **mobilenet_tf.registry.options_for(config.model, alpha=config.alpha),
            **({"stochastic_depth_rate": config.stochastic_depth,
                "flat_stochastic_depth": schedule.flat_stochastic_depth} if config.stochastic_depth else {}),
        )
        schedules.add_weight_decay(model, config.weight_decay)
        schedules.configure_batchnorm(model, momentum=config.bn_momentum, epsilon=schedule.bn_epsilon)
        peak_lr = schedules.scaled_lr(schedule, config.global_batch_size, config.learning_rate)
        optimizer = schedules.make_optimizer(schedule, peak_lr=peak_lr, steps_per_epoch=self.steps_per_epoch,
                                             warmup_epochs=config.warmup_epochs, ema=config.ema, epochs=config.epochs)
        metrics = [keras.metrics.CategoricalAccuracy(name="top1"),
                   keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")]

        def smoothed_crossentropy(y_true, y_pred):
            return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=config.label_smoothing)

        return model, optimizer, smoothed_crossentropy, metrics

    def train_dataset(self):
        return self.pipeline(self.train_split, training=True)

    def final_metrics(self, model, history):
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            top1, top5 = history["val_top1"][-1], history["val_top5"][-1]
        else:
            results = model.evaluate(self.eval_ds, steps=self.eval_steps, verbose=0, return_dict=True)
            top1, top5 = results["top1"], results["top5"]
        config = self.config
        return dict(top1=top1, top5=top5, model=config.model, alpha=config.alpha, dataset=config.dataset,
                    image_size=config.image_size, num_classes=self.val_split.num_classes)

    def calibration_images(self, split, count):
        # Center crops (a folder split lists its images class by class: shuffled first).
        shuffled = recipe.shuffled_split(split, count, self.config.seed)
        return classification.make_pipeline(shuffled, training=False, batch_size=1,
                                            image_size=self.config.image_size).map(lambda image, label: image)

    def evaluate_tflite(self, paths, model, metrics):
        metrics["tflite"] = evaluation.evaluate_tflite(paths, model, self.eval_ds, self.eval_steps)
        for fmt, result in metrics["tflite"].items():
            print(f"{fmt} TFLite: top-1 {result['top1']:.4f}, agrees with Keras on {result['agreement']:.4f}, "
                  f"{result['bytes']} bytes")

    def summary(self, metrics):
        return (f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  ({metrics['epochs']} epochs, "
                f"{metrics['images_per_second']:.0f} img/s)")


Config, resolve, main, get_args_parser, cli = recipe.script(ImageNet)

if __name__ == "__main__":
    cli()
