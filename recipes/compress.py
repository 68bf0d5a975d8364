"""Compress a MobileNet the Deep Compression way: prune -> cluster -> QAT -> int8 TFLite.

    python recipes/compress.py                       # synthetic data, CPU, minutes: train, then compress
    python recipes/compress.py --weights run/weights.npz --model v3_small --alpha 0.75 --input-size 224 \\
        --classes 1000 --dataset imagenet2012 --data-dir ~/tensorflow_datasets --prune 0.75 --clusters 16

Runs under tf_keras (tensorflow-model-optimization 0.8 needs it): this script sets
``TF_USE_LEGACY_KERAS=1`` itself before TensorFlow is imported. A model trained
with Keras 3 comes in as ``--weights`` saved by ``mobilenet_tf.weights.save_by_name``
(layer names are the contract; the model is rebuilt with the same builder), and
the compressed weights go back the same way (``compressed.npz``).

Stages (each fine-tuned, each measured on the evaluation set):
float -> pruned (``--prune`` sparsity of every Conv2D / Dense kernel, polynomial
schedule) -> clustered (``--clusters`` shared values per kernel, zeros kept) ->
quantization-aware (cluster- and sparsity-preserving) -> int8 TFLite. The size
report follows Deep Compression (Han et al. 2016) and the SqueezeNet paper: bytes
of each stage's TFLite file, bytes after gzip (entropy coding stands in for
Huffman coding; pruned zeros and shared values only pay off there), and the
ratio to the float model. The run directory gets config.json, metrics.json,
report.md (the table), size_accuracy.png, the stages' .tflite files and
compressed.npz.
"""

import dataclasses
import gzip
import os
from typing import Optional

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: TFMOT works on tf_keras only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import compress, export, weights  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.data import classification  # noqa: E402
from mobilenet_tf.training import config as config_lib, engine, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402


@dataclasses.dataclass
class Config:
    """Compress a MobileNet: prune -> cluster -> QAT -> int8 TFLite, with the size report."""

    model: str = field("v3_small", "registry name of the model to compress")
    alpha: float = field(0.5, "width multiplier")
    input_size: int = field(48, "input side")
    classes: int = field(10, "classes of the classifier")
    weights: Optional[str] = field(None, "weights to compress (.npz from weights.save_by_name); default: train "
                                         "the model here first")
    dataset: str = field("synthetic", "synthetic | a TFDS image-classification name (imagenet2012, ...)")
    data_dir: Optional[str] = field(None, "TFDS data dir")
    train_examples: int = field(2560, "synthetic training images")
    eval_examples: int = field(400, "evaluation images (synthetic; the first N of a TFDS split)")
    batch_size: int = field(32, "training batch size")
    train_steps: int = field(240, "steps to train the float model (without --weights)")
    learning_rate: float = field(2e-3, "Adam lr of the float training; fine-tuning uses fractions of it")
    prune: float = field(0.75, "target sparsity of every Conv2D / Dense kernel, in (0, 1)")
    prune_steps: int = field(160, "pruning fine-tuning steps (sparsity reaches the target at 3/4 of them)")
    clusters: int = field(16, "shared values per kernel (>= 2)")
    cluster_steps: int = field(60, "clustering fine-tuning steps")
    qat_steps: int = field(60, "quantization-aware fine-tuning steps")
    seed: int = field(0, "random seed")
    output_dir: str = field("runs/compress", "run directory")
    overwrite: bool = field(False, "replace a finished run in --output-dir")


def resolve(config):
    mobilenet_tf.registry.get_entry(config.model)
    if not 0 < config.prune < 1:
        raise ValueError(f"`--prune` (target sparsity) must be in (0, 1); got {config.prune}.")
    if config.clusters < 2:
        raise ValueError(f"`--clusters` must be >= 2; got {config.clusters}.")
    for name in ("train_steps", "prune_steps", "cluster_steps", "qat_steps", "batch_size", "eval_examples"):
        if getattr(config, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(config, name)}.")
    if config.weights and not os.path.isfile(config.weights):
        raise ValueError(f"`--weights` {config.weights!r} is not a file (expected an .npz from "
                         "mobilenet_tf.weights.save_by_name).")
    return config


def load_data(config):
    """(training batches, evaluation images (N, S, S, 3), labels (N,))."""
    if config.dataset == "synthetic":
        train = classification.synthetic_split(True, config.train_examples, config.input_size, config.classes,
                                               config.seed)
        val = classification.synthetic_split(False, config.eval_examples, config.input_size, config.classes,
                                             config.seed)
    else:
        train = classification.tfds_split(config.dataset, "train", config.data_dir)
        val = classification.tfds_split(config.dataset, "validation", config.data_dir)
        if train.num_classes != config.classes:
            raise ValueError(f"{config.dataset!r} has {train.num_classes} classes; pass --classes {train.num_classes}.")
    train_ds = classification.make_pipeline(train, training=True, batch_size=config.batch_size,
                                            image_size=config.input_size, area_range=(0.25, 1.0), seed=config.seed)
    val_ds = classification.make_pipeline(val, training=False, batch_size=config.eval_examples,
                                          image_size=config.input_size)
    images, labels = next(iter(val_ds))
    return train_ds, images.numpy(), labels.numpy()


def fit(model, train_ds, lr, steps, callbacks=()):
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0)
    return model


def accuracy(predict, images, labels):
    return float(np.mean(np.argmax(predict(images), -1) == labels))


def stage_sizes(path):
    """(bytes, gzip bytes) of a file."""
    with open(path, "rb") as f:
        raw = f.read()
    return len(raw), len(gzip.compress(raw, compresslevel=9))


def main(config):
    config = resolve(config)
    keras.utils.set_random_seed(config.seed)
    train_ds, images, labels = load_data(config)
    run = engine.prepare_run_dir(config.output_dir, config.overwrite)
    config_lib.save_config(config, run.path("config.json"))
    model = mobilenet_tf.build(config.model, alpha=config.alpha, input_shape=(config.input_size,) * 2 + (3,),
                               classes=config.classes, include_preprocessing=True)
    schedules.configure_batchnorm(model, momentum=0.9)
    if config.weights:
        weights.load_by_name(model, config.weights)
    else:
        fit(model, train_ds, config.learning_rate, config.train_steps)
    keras_predict = lambda m: (lambda x: m.predict(x, verbose=0, batch_size=100))  # noqa: E731
    stages = []

    def record(name, keras_model, path, predict=None):
        size, gzipped = stage_sizes(path)
        stages.append(dict(stage=name, accuracy=accuracy(predict or keras_predict(keras_model), images, labels),
                           bytes=size, gzip_bytes=gzipped, file=os.path.basename(path)))
        print(f"{name:>10}: accuracy {stages[-1]['accuracy']:.4f}  {size / 1e6:.2f} MB  gzip {gzipped / 1e6:.2f} MB",
              flush=True)

    record("float", model, export.to_tflite(model, run.path("float.tflite")))

    pruned = compress.prune(model, config.prune, end_step=max(1, config.prune_steps * 3 // 4),
                            frequency=max(1, config.prune_steps // 16))
    pruned = compress.strip(fit(pruned, train_ds, config.learning_rate / 4, config.prune_steps,
                                compress.pruning_callbacks()))
    record("pruned", pruned, export.to_tflite(pruned, run.path("pruned.tflite")))

    clustered = compress.cluster(pruned, config.clusters, preserve_sparsity=True)
    clustered = compress.strip(fit(clustered, train_ds, config.learning_rate / 10, config.cluster_steps))
    record("clustered", clustered, export.to_tflite(clustered, run.path("clustered.tflite")))

    qat = fit(compress.quantize_aware(clustered, "cluster_preserve"), train_ds, config.learning_rate / 20,
              config.qat_steps)
    int8_path = export.to_tflite(qat, run.path("int8.tflite"), "qat")
    record("int8", qat, int8_path, predict=export.TFLiteModel(int8_path))
    weights.save_by_name(clustered, run.path("compressed.npz"))

    float_bytes = stages[0]["bytes"]
    for stage in stages:
        stage["ratio"] = float_bytes / stage["gzip_bytes"]
    by_stage = {stage["stage"]: stage for stage in stages}
    metrics = dict(
        float_accuracy=by_stage["float"]["accuracy"], pruned_accuracy=by_stage["pruned"]["accuracy"],
        clustered_accuracy=by_stage["clustered"]["accuracy"], qat_accuracy=accuracy(keras_predict(qat), images, labels),
        int8_tflite_accuracy=by_stage["int8"]["accuracy"], compression_ratio=by_stage["int8"]["ratio"],
        sparsity=float(np.mean(list(compress.sparsity(clustered).values()))),
        max_unique_values=int(max(compress.unique_values(clustered).values())), stages=stages,
        model=config.model, alpha=config.alpha, input_size=config.input_size, classes=config.classes,
        params=mobilenet_tf.profile(model).params, eval_examples=int(len(labels)))
    write_report(stages, run.path("report.md"))
    plot_stages(stages, run.path("size_accuracy.png"))
    engine.write_metrics(run, metrics)
    print(f"compression {metrics['compression_ratio']:.1f}x, int8 accuracy {metrics['int8_tflite_accuracy']:.4f} "
          f"(float {metrics['float_accuracy']:.4f})  -> {run.root}")
    return metrics


def write_report(stages, path):
    """Deep Compression's table as Markdown."""
    lines = ["| stage | accuracy | bytes | gzip bytes | ratio to float |", "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['accuracy']:.4f} | {s['bytes']:,} | {s['gzip_bytes']:,} | {s['ratio']:.1f}x |"
              for s in stages]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_stages(stages, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    sizes = [s["gzip_bytes"] / 1e6 for s in stages]
    ax.plot(sizes, [s["accuracy"] for s in stages], "o-")
    for s, size in zip(stages, sizes):
        ax.annotate(f"{s['stage']} ({s['ratio']:.1f}x)", (size, s["accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("model size after gzip (MB)")
    ax.set_ylabel("accuracy")
    ax.set_title("Deep Compression stages")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def get_args_parser():
    return config_lib.get_args_parser(Config)


if __name__ == "__main__":
    engine.recipe_main(main, Config)
