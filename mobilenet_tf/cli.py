"""Command line: ``mobilenet-tf list | summary | profile | zoo | export | bench``.

    mobilenet-tf list
    mobilenet-tf summary v3_small --alpha 0.75 --resolution 160
    mobilenet-tf profile v3_large --minimalistic --per-layer
    mobilenet-tf profile v2 --json
    mobilenet-tf zoo          # the README's model zoo table, measured now
    mobilenet-tf export v3_small --alpha 0.75 --weights run/best.weights.h5 --quantize int8 --out v3s.tflite
    mobilenet-tf bench v3_small --backends keras,tflite,tflite-int8 --threads 2 --json
    mobilenet-tf compress run/model.keras --prune 0.75 --clusters 16 --qat --data synthetic --out run/compressed
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


class _Choices:
    """argparse ``choices`` read from a module only when used (parsing that flag or
    printing its help), so that commands such as ``list`` never import TensorFlow."""

    def __init__(self, load):
        self._load = load

    def __iter__(self):
        return iter(self._load())

    def __contains__(self, value):
        return value in self._load()


def _quantize_choices():
    from mobilenet_tf import export

    return ["none", *export.FORMATS]  # "none": the old spelling of fp32, still the default


# --quantize: the post-training names of export.QUANTIZATIONS, and "none" (= fp32).
QUANTIZE_CHOICES = _Choices(_quantize_choices)

# What --alpha, --resolution and --classes mean when not given (and, for export /
# bench with --weights, when no config.json of a recipe run lies next to the file).
MODEL_DEFAULTS = dict(alpha=1.0, resolution=224, classes=1000)


def _model_args(parser, from_run=False):
    beside = "the config.json of the run next to --weights, else " if from_run else ""
    parser.add_argument("name", help="model name (see `mobilenet-tf list`)")
    parser.add_argument("--alpha", type=float, help=f"MobileNet width multiplier (default: {beside}1.0)")
    parser.add_argument("--resolution", type=int, help=f"input height = width (default: {beside}224)")
    parser.add_argument("--minimalistic", action="store_true", help="V3 only: 3x3, ReLU, no SE")
    parser.add_argument("--classes", type=int, help=f"classes of the top (default: {beside}1000)")
    parser.add_argument("--no-top", action="store_true", help="backbone only, without the classifier")


def get_args_parser():
    parser = argparse.ArgumentParser(prog="mobilenet-tf", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list model names", allow_abbrev=False)
    p.add_argument("--weights", action="store_true", help="also say where trained weights are published")
    _model_args(sub.add_parser("summary", help="print the Keras summary of a model", allow_abbrev=False))
    p = sub.add_parser("profile", help="params and multiply-adds of a model", allow_abbrev=False)
    _model_args(p)
    p.add_argument("--per-layer", action="store_true", help="one row per layer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("zoo", help="the model zoo table (Markdown), measured", allow_abbrev=False)
    p = sub.add_parser("export", help="write a .tflite file (fp32, float16, dynamic or int8)", allow_abbrev=False)
    _model_args(p, from_run=True)
    p.add_argument("--weights", help="a .weights.h5 file (default: random weights); a recipe run's config.json "
                                     "next to it gives --alpha, --resolution and --classes")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES,
                   help="weights / activations format (default none: float32)")
    p.add_argument("--calibration-images", type=int, default=200,
                   help="int8: synthetic images to calibrate on (default 200)")
    p.add_argument("--out", required=True, help="output .tflite path (missing folders are made)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p = sub.add_parser("bench", help="batch latency on Keras and TFLite backends", allow_abbrev=False)
    _model_args(p, from_run=True)
    p.add_argument("--weights", help="a .weights.h5 file (default: random weights, BatchNormalization statistics "
                                     "set from synthetic images so activations have a trained model's scale)")
    p.add_argument("--backends", default="keras,tflite",
                   help="comma list of keras and tflite-<quantization> backends, the quantization one of "
                        "export.FORMATS (tflite-fp32, tflite-float16, tflite-dynamic, tflite-int8); the older "
                        "names tflite (fp32) and tflite-fp16 still work")
    p.add_argument("--batch", type=int, default=1, help="images per call, >= 1 (default 1)")
    p.add_argument("--threads", type=int, default=None, help="TFLite threads, >= 1 (default: TFLite's)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per backend, >= 1 (default 30)")
    p.add_argument("--runtime", choices=["litert", "tensorflow"], default=None,
                   help="TFLite interpreter (default: LiteRT where ai-edge-litert is installed)")
    p.add_argument("--op-profile", action="store_true",
                   help="also run TFLite's op profiler on each TFLite file (LiteRT's, via ai-edge-litert) and print "
                        "where its time goes, kernel by kernel (XNNPACK's int8 and float kernels, ops left to TFLite)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _compress_args(sub.add_parser(
        "compress", help="prune, cluster and quantize a trained model to int8 TFLite, with the size report "
                         "(TFMOT under tf_keras, in a child process)", allow_abbrev=False))
    return parser


# deep_compression.Config fields the command passes through unchanged.
COMPRESS_PASS_THROUGH = ("prune_steps", "cluster_steps", "centroid_init", "qat_steps", "calibration_images",
                         "batch_size", "learning_rate", "train_examples", "eval_examples", "seed")


def _compress_args(p):
    import dataclasses

    from mobilenet_tf.deep_compression import Config

    p.add_argument("model_path", help="a classifier: a .keras file (recipes/imagenet.py's model.keras), or "
                                      ".weights.h5 / .npz (from weights.save_by_name) with --name, --resolution "
                                      "and --classes")
    p.add_argument("--name", help="registry name it was built with (default: config.json next to the model file)")
    p.add_argument("--alpha", type=float, help="width multiplier it was built with (default: config.json, else 1.0)")
    p.add_argument("--resolution", type=int, help="input side (default: the .keras model's)")
    p.add_argument("--classes", type=int, help="classes (default: the .keras model's)")
    p.add_argument("--prune", type=float, default=0.0, help="target sparsity in (0, 1) (default: no pruning)")
    p.add_argument("--clusters", type=int, default=0, help="shared values per kernel, >= 2 (default: none)")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning before int8 (default: "
                                                      "post-training int8 calibrated on training images)")
    p.add_argument("--data", default="synthetic", help="fine-tuning / evaluation data: synthetic or a TFDS name")
    p.add_argument("--data-dir", help="TFDS data dir")
    p.add_argument("--out", required=True, help="output directory (report.md, metrics.json, int8.tflite, "
                                                "compressed.keras, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic ops, input order and one inter-op thread (slower)")
    defaults = {f.name: f for f in dataclasses.fields(Config)}
    for name in COMPRESS_PASS_THROUGH:
        field = defaults[name]
        p.add_argument("--" + name.replace("_", "-"), type=type(field.default), default=field.default,
                       help=field.metadata["help"], choices=field.metadata.get("choices"))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read {path!r} ({type(error).__name__}: {error}); repair or remove it.") from None


def _run_settings(args):
    """{"alpha", "resolution", "classes", "include_preprocessing"} that a recipe run
    says about ``args.weights``, and the config.json path ({} and None without one).

    recipes/imagenet.py writes config.json ("model", "alpha", "image_size",
    "dataset", "synthetic_classes") and, when it finishes, metrics.json
    ("num_classes"); ``mobilenet-tf compress`` / mobilenet_tf.deep_compression write
    "model", "alpha", "input_size", "classes". Both build with
    include_preprocessing=True ([0, 255] pixels). The detection, segmentation and
    FaceNet recipes name a "backbone": their weights are not a classifier's.
    """
    weights = getattr(args, "weights", None)
    if not weights or not os.path.isfile(weights):  # none, "imagenet", or missing (the builder says so)
        return {}, None
    folder = os.path.dirname(os.path.abspath(weights))
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return {}, None
    saved = _read_json(path)
    if "model" not in saved:
        kind = f"a `backbone` ({saved['backbone']!r})" if "backbone" in saved else "no `model`"
        raise ValueError(f"{path} (next to --weights {weights!r}) names {kind}: these are not the weights of a "
                         "registry classifier, which `mobilenet-tf export` / `bench` build. Export the run's "
                         "model.keras with mobilenet_tf.export.to_tflite (or rerun the recipe with --tflite); for "
                         "a classifier's weights, move that config.json away and pass --alpha, --resolution and "
                         "--classes.")
    if saved["model"] != args.name:
        raise ValueError(f"`name` is {args.name!r} but {path} says --weights {weights!r} is a {saved['model']!r}: "
                         f"pass {saved['model']!r} as the name (or move that config.json away to build "
                         f"{args.name!r} from the flags alone).")
    settings = dict(include_preprocessing=True)
    if saved.get("alpha") is not None:
        settings["alpha"] = float(saved["alpha"])
    for key in ("image_size", "input_size", "resolution"):
        if saved.get(key) is not None:
            settings["resolution"] = int(saved[key])
            break
    classes = saved.get("classes", saved.get("num_classes"))
    metrics = os.path.join(folder, "metrics.json")
    if classes is None and os.path.isfile(metrics):
        classes = _read_json(metrics).get("num_classes")
    if classes is None and saved.get("dataset") == "synthetic":
        classes = saved.get("synthetic_classes")
    if classes is not None:
        settings["classes"] = int(classes)
    return settings, path


def _model_settings(args):
    """Fill ``args.alpha`` / ``resolution`` / ``classes``: the flag, else the recipe run's
    config.json next to ``--weights``, else ``MODEL_DEFAULTS``. Returns a dict of
    extra builder arguments and, per setting, where its value came from."""
    saved, path = _run_settings(args)
    sources = {}
    for key, default in MODEL_DEFAULTS.items():
        if getattr(args, key) is not None:
            sources[key] = f"--{key}"
        elif key in saved:
            setattr(args, key, saved[key])
            sources[key] = path
        else:
            setattr(args, key, default)
            sources[key] = "default"
    return {"include_preprocessing": True} if saved.get("include_preprocessing") else {}, sources


def _h5_shapes(path):
    import h5py

    shapes = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: shapes.__setitem__(name, item.shape) if isinstance(item, h5py.Dataset)
                     else None)
    return shapes


def _weights_mismatch(args, kwargs, sources, error):
    """A ``ValueError`` saying why ``args.weights`` does not load into the model of
    ``kwargs``: the classes of its top when only they differ, else which flags to check."""
    import mobilenet_tf

    built = ", ".join(f"{key} {getattr(args, key)} ({sources[key]})" for key in MODEL_DEFAULTS)
    advice = ("pass the --alpha, --classes (and --minimalistic / --no-top) the weights were trained with, or keep "
              "the recipe run's config.json next to the weights file")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = os.path.join(tmp, "fresh.weights.h5")
            mobilenet_tf.build(args.name, **{k: v for k, v in kwargs.items() if k != "weights"}).save_weights(fresh)
            ours = _h5_shapes(fresh)
        theirs = _h5_shapes(args.weights)
    except (OSError, ValueError):
        ours, theirs = {}, None
    if ours and set(ours) == set(theirs):
        differ = [(ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]]
        if differ and all(len(a) == len(b) and a[:-1] == b[:-1] and a[-1] == args.classes for a, b in differ):
            found = differ[0][1][-1]
            return ValueError(f"`--weights` {args.weights!r} has a {found}-class top but the model was built with "
                              f"--classes {args.classes} ({sources['classes']}): pass --classes {found}.")
    detail = str(error).splitlines()[0][:300]
    return ValueError(f"`--weights` {args.weights!r} does not fit {args.name} built with {built}: {advice}. "
                      f"({detail})")


def _build(args):
    import mobilenet_tf

    extra, sources = _model_settings(args)
    kwargs = dict(input_shape=(args.resolution, args.resolution, 3), include_top=not args.no_top,
                  classes=args.classes, **mobilenet_tf.registry.options_for(args.name, alpha=args.alpha))
    if args.minimalistic:
        kwargs["minimalistic"] = True
    for key, value in extra.items():
        if mobilenet_tf.registry.accepts(args.name, key):
            kwargs[key] = value
    if not getattr(args, "weights", None):
        return mobilenet_tf.build(args.name, **kwargs)
    kwargs["weights"] = args.weights
    try:
        return mobilenet_tf.build(args.name, **kwargs)
    except ValueError as error:
        if not str(error).startswith("could not load `weights`"):
            raise
        raise _weights_mismatch(args, kwargs, sources, error) from None


def _synthetic_images(count, size):
    """(count, size, size, 3) synthetic classification images, pixels in [0, 255] as the
    models take them with include_preprocessing: int8 calibration and BN statistics."""
    import numpy as np

    from mobilenet_tf.data import synthetic

    dataset = synthetic.synthetic_classification(count, size, seed=1)
    return np.stack([image for image, _ in dataset.as_numpy_iterator()])


def _check_out(args):
    """Refuse an ``--out`` that cannot or should not be written, before any conversion."""
    out = args.out
    if os.path.isdir(out):
        raise ValueError(f"`--out` {out!r} is a folder; give a file path such as "
                         f"{os.path.join(out, args.name + '.tflite')!r}.")
    if os.path.exists(out):
        if args.weights and os.path.isfile(args.weights) and os.path.samefile(out, args.weights):
            raise ValueError(f"`--out` {out!r} is the --weights file; choose another path (a .tflite file).")
        if not args.overwrite:
            raise ValueError(f"`--out` {out!r} exists; pass --overwrite to replace it, or choose another path.")
        if not os.access(out, os.W_OK):
            raise ValueError(f"`--out` {out!r} exists and is not writable; choose another path.")
        return
    folder = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(folder):  # missing folders are made when the file is written
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"`--out` {out!r} cannot be written: {folder!r} is a file, not a folder; choose another "
                         "--out.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` {out!r} cannot be written: no permission to write in {folder!r}; choose a "
                         "writable folder.")


def _export(args):
    from mobilenet_tf import export

    quantization = export.quantization_name(args.quantize, tuple(export.FORMATS), what="--quantize")
    if quantization == "int8" and args.calibration_images < 1:
        raise ValueError(f"`--calibration-images` must be >= 1 for --quantize int8; got {args.calibration_images}.")
    _check_out(args)
    model = _build(args)
    calibration = None
    if quantization == "int8":
        # Representative data: the synthetic classification images at the model's size
        # (pixels in [0, 255], as the models take them with include_preprocessing).
        calibration = _synthetic_images(args.calibration_images, args.resolution)[:, None]
    path = export.to_tflite(model, args.out, quantization, calibration,
                            calibration_steps=args.calibration_images)
    print(f"{path}: {os.path.getsize(path):,} bytes ({args.quantize})")


def _bench(args):
    from mobilenet_tf import benchmark, profile

    backends = [b for b in args.backends.split(",") if b]
    benchmark.check_backends(backends)
    for flag in ("batch", "repeats", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            default = " (or leave it out for TFLite's default)" if flag == "threads" else ""
            raise ValueError(f"`--{flag}` must be an integer >= 1; got {value}. Pass --{flag} 1 or more{default}.")
    model = _build(args)
    if not args.weights:
        benchmark.batchnorm_from_data(model, _synthetic_images(16, args.resolution))
    results = benchmark.bench(model, backends, batch=args.batch, threads=args.threads, repeats=args.repeats,
                              madds=profile(model).madds, runtime=args.runtime,
                              calibration=_synthetic_images(16, args.resolution)[:, None],
                              op_profile=args.op_profile)
    if args.json:
        print(json.dumps({"model": args.name, "batch": args.batch, "threads": args.threads,
                          "resolution": args.resolution, "results": results}, indent=2))
        return
    print(f"{args.name} {args.resolution}x{args.resolution} batch {args.batch}, threads {args.threads}")
    print(f"{'backend':<15} {'median ms':>10} {'p90 ms':>8} {'images/s':>9} {'bytes':>12} {'peak share':>10}  "
          "XNNPACK partitions (ops outside)")
    for r in results:
        outside = ", ".join(f"{op} x{n}" for op, n in sorted(r.get("ops_outside_xnnpack", {}).items()))
        partitions = f"{r['xnnpack_partitions']} ({outside or 'none'})" if "xnnpack_partitions" in r else "-"
        print(f"{r['backend']:<15} {r['latency_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['images_per_second']:>9.1f} "
              f"{r['model_bytes']:>12,} {r['peak_share']:>10.1%}  {partitions}")
    for r in results:
        if "op_profile" in r:
            print(f"\n{r['backend']}: TFLite's op profiler, {args.repeats} runs ({args.threads or 1} threads)")
            print(f"{'kernel':<55} {'nodes':>6} {'ms/run':>8} {'share':>7}")
            for k in r["op_profile"]:
                print(f"{k['kernel']:<55} {k['nodes']:>6} {k['ms']:>8.3f} {k['share']:>7.1%}")


def _builder_args(args):
    """(registry name, alpha) of the model at ``args.model_path``: the flags, else the
    config.json beside it (recipes/imagenet.py writes one, keys "model" and "alpha")."""
    saved = {}
    beside = os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "config.json")
    if os.path.isfile(beside):
        with open(beside) as f:
            saved = json.load(f)
    name = args.name or saved.get("model")
    if not name:
        raise ValueError(f"cannot tell which model {args.model_path!r} is: pass --name (and --alpha), or keep the "
                         "recipe's config.json next to it.")
    alpha = args.alpha if args.alpha is not None else saved.get("alpha", 1.0)
    return name, alpha


def rebuild(name, alpha, resolution, classes):
    """The classifier a run's config.json describes (``_builder_args``), as every recipe
    builds it: [0, 255] pixels, ``alpha`` where the family takes one (``registry.options_for``;
    1.0, which a ShuffleNet run records, passes for any family)."""
    import mobilenet_tf

    return mobilenet_tf.build(name, input_shape=(resolution, resolution, 3), classes=classes,
                              include_preprocessing=True, **mobilenet_tf.registry.options_for(name, alpha=alpha))


def _compress(args):
    """Rebuild the model with our builder in Keras 3 and check it reproduces the file,
    hand its weights by name to ``mobilenet_tf.deep_compression`` in a tf_keras child
    process, then bring the compressed weights back as compressed.keras / .weights.h5."""
    import numpy as np

    from mobilenet_tf import weights
    from mobilenet_tf._keras import keras

    path = args.model_path
    if not os.path.isfile(path):
        raise ValueError(f"`model_path` {path!r} does not exist.")
    if not path.endswith((".keras", ".weights.h5", ".npz")):
        raise ValueError(f"`model_path` must be a .keras, .weights.h5 or .npz file; got {path!r}.")
    if not (args.prune == 0 or 0 < args.prune < 1):
        raise ValueError(f"`--prune` (target sparsity) must be in (0, 1); got {args.prune}.")
    if args.clusters != 0 and args.clusters < 2:
        raise ValueError(f"`--clusters` must be >= 2; got {args.clusters}.")
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise ValueError(f"`--data-dir` {args.data_dir!r} is not a directory.")
    if os.path.exists(os.path.join(args.out, "metrics.json")) and not args.overwrite:
        raise ValueError(f"`--out` {args.out!r} holds a finished run (metrics.json exists); pass --overwrite to "
                         "replace it or choose another --out.")
    name, alpha = _builder_args(args)
    resolution, classes = args.resolution, args.classes
    if path.endswith(".keras"):
        loaded = keras.saving.load_model(path, compile=False)
        resolution, classes = resolution or loaded.input_shape[1], classes or loaded.output_shape[-1]
    if not resolution or not classes:
        raise ValueError("a weights file does not say the model's input size and classes: pass --resolution and "
                         "--classes.")
    model = rebuild(name, alpha, resolution, classes)
    with tempfile.TemporaryDirectory() as tmp:
        given = os.path.join(tmp, "given.npz")
        if path.endswith(".keras"):
            weights.save_by_name(loaded, given)
            weights.load_by_name(model, given)
            x = _synthetic_images(4, resolution).astype("float32")
            expected, rebuilt = np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False))
            if np.max(np.abs(expected - rebuilt)) > 1e-4 * max(1.0, np.max(np.abs(expected))):
                raise ValueError(f"{name} (alpha {alpha}, include_preprocessing=True) rebuilt from {path!r} does "
                                 f"not reproduce its outputs: pass the --name / --alpha it was built with (the "
                                 f"model must take [0, 255] pixels).")
        elif path.endswith(".weights.h5"):
            model.load_weights(path)
        else:
            weights.load_by_name(model, path)
        weights.save_by_name(model, given)
        command = [sys.executable, "-m", "mobilenet_tf.deep_compression", "--model", name, "--alpha", str(alpha),
                   "--input-size", str(resolution), "--classes", str(classes), "--weights", given,
                   "--prune", str(args.prune), "--clusters", str(args.clusters),
                   "--qat" if args.qat else "--no-qat", "--dataset", args.data, "--output-dir", args.out]
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        command += ["--overwrite"] if args.overwrite else []
        command += ["--deterministic"] if args.deterministic else []
        for flag in COMPRESS_PASS_THROUGH:
            command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        # TFMOT needs tf_keras, chosen before TensorFlow is imported: a child process.
        child = subprocess.run(command, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    if child.returncode:
        return child.returncode
    weights.load_by_name(model, os.path.join(args.out, "compressed.npz"))
    model.save(os.path.join(args.out, "compressed.keras"))
    model.save_weights(os.path.join(args.out, "compressed.weights.h5"))
    print(f"{args.out}: compressed.keras, compressed.weights.h5, compressed.dc, int8.tflite, report.md")
    return 0


def _published_weights(name):
    """Where trained weights for ``name`` are published, and how to load them."""
    from mobilenet_tf import registry, timm_weights

    record = registry.get_entry(name)
    if record.published:
        alphas = ", ".join(f"{a:g}" for a in record.published.alphas)
        widths = f" (alpha {alphas})" if record.width_argument == "alpha" else ""
        return f"keras.applications ImageNet{widths}: weights='imagenet'"
    if name in timm_weights.CHECKPOINTS:
        return f"timm ImageNet: {timm_weights.CHECKPOINTS[name]} on the Hugging Face Hub, weights='model.safetensors'"
    return "none published (train with recipes/imagenet.py)"


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = get_args_parser().parse_args(argv)
    from mobilenet_tf import profile, registry, zoo

    try:
        if args.command == "list":
            for name in registry.list_models():
                about = _published_weights(name) if args.weights else registry.get_entry(name).description
                print(f"{name:<24} {about}")
        elif args.command == "summary":
            _build(args).summary()
        elif args.command == "profile":
            result = profile(_build(args))
            if args.json:
                print(json.dumps(result.to_dict(per_layer=args.per_layer), indent=2))
            else:
                print(result.table() if args.per_layer else result)
        elif args.command == "zoo":
            print(zoo.zoo_markdown())
        elif args.command == "export":
            _export(args)
        elif args.command == "bench":
            _bench(args)
        elif args.command == "compress":
            return _compress(args)
    except ValueError as error:
        print(f"mobilenet-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
