"""The Deep Compression pipeline: float -> pruned -> clustered -> int8 TFLite, each
stage fine-tuned and measured, with the size report (Han et al. 2016; the SqueezeNet
paper's seed). ``recipes/compress.py`` and ``mobilenet-tf compress`` run it.

Runs under tf_keras (tensorflow-model-optimization 0.8 needs it): the process must
set ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported (the recipe and the CLI
do). A Keras 3 model comes in as weights by layer name (``weights.save_by_name``,
``.npz``) and the model is rebuilt with the same builder; the compressed weights go
out the same way (``compressed.npz``).

Stages, each optional but the first and last:
float -> pruned (``prune`` sparsity of every Conv2D / Dense kernel, polynomial
schedule) -> clustered (``clusters`` shared values per kernel, pruned zeros kept) ->
int8: quantization-aware fine-tuning (sparsity- / cluster-preserving) with ``qat``,
else post-training full-integer quantization calibrated on training images. Sizes
are each stage's TFLite file and that file after gzip, and the compressed weights
in Deep Compression's own format (``mobilenet_tf.compressed_format``: relative
positions, shared-value indices, Huffman coding) as ``compressed.dc``.
"""

import dataclasses
import gzip
import os
from typing import Optional

import numpy as np

import mobilenet_tf
from mobilenet_tf import _keras, compress, compressed_format, export, weights
from mobilenet_tf.data import classification
from mobilenet_tf.training import config as config_lib, recipe, reports, run_dir, schedules, strategy as strategy_lib
from mobilenet_tf.training.config import field

keras = _keras.keras


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
    prune: Optional[float] = field(0.75, "target sparsity of every Conv2D / Dense kernel, in (0, 1); 0: no pruning")
    prune_steps: int = field(160, "pruning fine-tuning steps (sparsity reaches the target at 3/4 of them)")
    clusters: Optional[int] = field(16, "shared values per kernel (>= 2); 0: no clustering")
    cluster_steps: int = field(60, "clustering fine-tuning steps")
    centroid_init: str = field("kmeans_plus_plus", "how cluster centroids start", choices=compress.CENTROID_INITS)
    qat: bool = field(True, "quantization-aware fine-tuning before int8 (else post-training int8)")
    qat_steps: int = field(60, "quantization-aware fine-tuning steps")
    calibration_images: int = field(200, "post-training int8 (--no-qat): training images to calibrate on")
    seed: int = field(0, "random seed")
    deterministic: bool = field(False, "deterministic ops, input order and one inter-op thread (slower)")
    output_dir: str = field("runs/compress", "run directory")
    overwrite: bool = field(False, "replace a finished run in --output-dir")


def resolve(config):
    """Check ``config`` before any work (``ValueError`` naming the flag); 0 / None
    turn pruning and clustering off."""
    mobilenet_tf.registry.get_entry(config.model)
    config.prune = config.prune or None
    config.clusters = config.clusters or None
    if config.prune is not None and not 0 < config.prune < 1:
        raise ValueError(f"`--prune` (target sparsity) must be in (0, 1), or 0 for none; got {config.prune}.")
    if config.clusters is not None and config.clusters < 2:
        raise ValueError(f"`--clusters` must be >= 2, or 0 for none; got {config.clusters}.")
    recipe.check_at_least_one(config, ("train_steps", "prune_steps", "cluster_steps", "qat_steps", "batch_size",
                                       "eval_examples", "calibration_images"))
    if config.weights and not os.path.isfile(config.weights):
        raise ValueError(f"`--weights` {config.weights!r} is not a file (expected an .npz from "
                         "mobilenet_tf.weights.save_by_name).")
    if config.dataset != "synthetic" and config.data_dir and not os.path.isdir(config.data_dir):
        raise ValueError(f"`--data-dir` {config.data_dir!r} is not a directory.")
    return config


def load_data(config):
    """(training batches, evaluation images (N, S, S, 3), labels (N,))."""
    train, val = _split(config, training=True), _split(config, training=False)
    if config.dataset != "synthetic" and train.num_classes != config.classes:
        raise ValueError(f"{config.dataset!r} has {train.num_classes} classes; the model has {config.classes}.")
    train_ds = classification.make_pipeline(train, training=True, batch_size=config.batch_size,
                                            image_size=config.input_size, area_range=(0.25, 1.0), seed=config.seed)
    val_ds = classification.make_pipeline(val, training=False, batch_size=config.eval_examples,
                                          image_size=config.input_size)
    images, labels = next(iter(val_ds))
    return train_ds, images.numpy(), labels.numpy()


def calibration_images(config):
    """Post-training int8 calibration batches by the recipes' rule: training images as
    evaluated (center crop, no augmentation), shuffled, one per batch."""
    train = _split(config, training=True)
    shuffled = recipe.shuffled_split(train, config.calibration_images, config.seed)
    return classification.make_pipeline(shuffled, training=False, batch_size=1,
                                        image_size=config.input_size).map(lambda image, label: image)


def _split(config, training):
    if config.dataset == "synthetic":
        examples = config.train_examples if training else config.eval_examples
        return classification.synthetic_split(training, examples, config.input_size, config.classes, config.seed)
    return classification.tfds_split(config.dataset, "train" if training else "validation", config.data_dir)


def fit(model, train_ds, lr, steps, callbacks=()):
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    # Slots built here, not inside fit's first trace: variables created while tracing
    # make TensorFlow trace the train function twice.
    model.optimizer.build(model.trainable_variables)
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0)
    return model


def file_sizes(path):
    """(bytes, gzip bytes) of a file."""
    with open(path, "rb") as f:
        raw = f.read()
    return len(raw), len(gzip.compress(raw, compresslevel=9))


def build_model(config):
    """The classifier to compress: ``config.model`` at ``config.input_size`` with
    ``config.classes``, [0, 255] pixels, ``config.alpha`` where the family takes one
    (``registry.options_for``: 1.0 passes for any family)."""
    return mobilenet_tf.build(config.model, input_shape=(config.input_size,) * 2 + (3,), classes=config.classes,
                              include_preprocessing=True,
                              **mobilenet_tf.registry.options_for(config.model, alpha=config.alpha))


def main(config):
    """Run the stages; writes config.json, metrics.json, report.md, size_accuracy.png,
    the stages' .tflite files and compressed.npz to ``config.output_dir``."""
    config = resolve(config)
    compress.require_legacy_keras()
    strategy_lib.set_seeds(config.seed, config.deterministic)
    train_ds, images, labels = load_data(config)
    run = run_dir.prepare_run_dir(config.output_dir, config.overwrite)
    config_lib.save_config(config, run.path("config.json"))
    model = build_model(config)
    schedules.configure_batchnorm(model, momentum=0.9)
    if config.weights:
        weights.load_by_name(model, config.weights)
    else:
        fit(model, train_ds, config.learning_rate, config.train_steps)
    stages = []

    def keras_predict(keras_model):
        return lambda x: keras_model.predict(x, verbose=0, batch_size=100)

    def record(name, path, predict):
        size, gzipped = file_sizes(path)
        accuracy = float(np.mean(np.argmax(predict(images), -1) == labels))
        stages.append(dict(stage=name, accuracy=accuracy, bytes=size, gzip_bytes=gzipped,
                           file=os.path.basename(path)))
        print(f"{name:>10}: accuracy {accuracy:.4f}  {size / 1e6:.2f} MB  gzip {gzipped / 1e6:.2f} MB", flush=True)

    record("float", export.to_tflite(model, run.path("float.tflite")), keras_predict(model))
    current, scheme = model, "default"
    if config.prune:
        pruned = compress.prune(model, config.prune, end_step=max(1, config.prune_steps * 3 // 4),
                                frequency=max(1, config.prune_steps // 16))
        current = compress.strip(fit(pruned, train_ds, config.learning_rate / 4, config.prune_steps,
                                     compress.pruning_callbacks()))
        record("pruned", export.to_tflite(current, run.path("pruned.tflite")), keras_predict(current))
        scheme = "prune_preserve"
    if config.clusters:
        clustered = compress.cluster(current, config.clusters, init=config.centroid_init,
                                     preserve_sparsity=bool(config.prune))
        current = compress.strip(fit(clustered, train_ds, config.learning_rate / 10, config.cluster_steps))
        record("clustered", export.to_tflite(current, run.path("clustered.tflite")), keras_predict(current))
        scheme = "cluster_preserve"
    int8_path = run.path("int8.tflite")
    if config.qat:
        reference = fit(compress.quantize_aware(current, scheme), train_ds, config.learning_rate / 20,
                        config.qat_steps)
        export.to_tflite(reference, int8_path, "qat")
    else:
        # The recipes' calibration rule (mobilenet_tf.training.recipe): shuffled training
        # images as evaluated.
        reference = current
        export.to_tflite(current, int8_path, "int8", calibration_images(config),
                         calibration_steps=config.calibration_images)
    int8 = export.TFLiteModel(int8_path)
    record("int8", int8_path, int8)
    weights.save_by_name(current, run.path("compressed.npz"))
    # Deep Compression's file of the pruned and clustered weights (value indices as
    # wide as the clusters need).
    encoded = compressed_format.encode(current, bits=compressed_format.bits_for(config.clusters or 255))
    with open(run.path("compressed.dc"), "wb") as f:
        f.write(encoded)
    file_summary = compressed_format.report(encoded)

    for stage in stages:
        stage["ratio"] = stages[0]["bytes"] / stage["gzip_bytes"]
    by_stage = {stage["stage"]: stage for stage in stages}
    reference_top1 = np.argmax(keras_predict(reference)(images), -1)
    metrics = dict(
        float_accuracy=by_stage["float"]["accuracy"], int8_tflite_accuracy=by_stage["int8"]["accuracy"],
        # The Deep Compression file against the float32 weights; the int8 TFLite file
        # after gzip against the float one.
        compressed_bytes=len(encoded), float32_weight_bytes=file_summary["total"]["float32_bits"] // 8,
        compression_ratio=file_summary["total"]["ratio"], int8_gzip_ratio=by_stage["int8"]["ratio"],
        compressed_file=dict(file_summary["total"]), stages=stages,
        # The Keras-vs-TFLite gap: the QAT (or the float, for post-training int8) Keras
        # model's accuracy and its top-1 agreement with the int8 file.
        int8_reference_accuracy=float(np.mean(reference_top1 == labels)),
        int8_agreement=float(np.mean(np.argmax(int8(images), -1) == reference_top1)),
        int8_method="qat" if config.qat else "post-training",
        model=config.model, alpha=config.alpha, input_size=config.input_size, classes=config.classes,
        params=mobilenet_tf.profile(model).params, eval_examples=int(len(labels)))
    if config.prune:
        metrics["pruned_accuracy"] = by_stage["pruned"]["accuracy"]
        metrics["sparsity_per_layer"] = compress.sparsity(current)
        metrics["sparsity"] = float(np.mean(list(metrics["sparsity_per_layer"].values())))
    if config.clusters:
        metrics["clustered_accuracy"] = by_stage["clustered"]["accuracy"]
        metrics["unique_values_per_layer"] = compress.unique_values(current)
        metrics["max_unique_values"] = int(max(metrics["unique_values_per_layer"].values()))
    if config.qat:
        metrics["qat_accuracy"] = metrics["int8_reference_accuracy"]
    write_report(stages, run.path("report.md"), file_summary)
    plot_stages(stages, run.path("size_accuracy.png"))
    reports.write_metrics(run, metrics)
    print(f"compressed.dc {len(encoded):,} bytes ({metrics['compression_ratio']:.1f}x the float32 weights), "
          f"int8 TFLite + gzip {metrics['int8_gzip_ratio']:.1f}x, int8 accuracy {metrics['int8_tflite_accuracy']:.4f} "
          f"(float {metrics['float_accuracy']:.4f})  -> {run.root}")
    return metrics


def write_report(stages, path, file_summary):
    """Deep Compression's tables as Markdown: the stages' TFLite files, then the
    compressed.dc file layer by layer (``compressed_format.report_markdown``)."""
    lines = ["| stage | accuracy | bytes | gzip bytes | ratio to float |", "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['accuracy']:.4f} | {s['bytes']:,} | {s['gzip_bytes']:,} | {s['ratio']:.1f}x |"
              for s in stages]
    lines += ["", "compressed.dc (Deep Compression's format):", "",
              compressed_format.report_markdown(file_summary).rstrip("\n")]
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


if __name__ == "__main__":  # python -m mobilenet_tf.deep_compression (with TF_USE_LEGACY_KERAS=1 set)
    recipe.recipe_main(main, Config)
