"""On-device latency per backbone: Keras vs TFLite fp32 / fp16 / int8 at batch 1, and
the roofline. Prints the README's deployment table.

    python benchmarks/deploy.py                        # the MobileNets (V1-V4) at 224, 2 threads
    python benchmarks/deploy.py --models v3_small --resolution 160 --repeats 100
    python benchmarks/deploy.py --models facenet_v1 --resolution 160   # the FaceNet student
    python benchmarks/deploy.py --models v3_small --op-profile         # + where fp32's and int8's time goes

Every model at one resolution (MobileNetV4's own are 224-384: the zoo table), so rows
compare. Random weights with BatchNormalization statistics taken from synthetic images
(``benchmark.batchnorm_from_data``: without them activations shrink to ~1e-6 and
int8 gets scales no trained model has); int8 is calibrated on synthetic images.
A model's TFLite files are timed in alternating rounds of one run (median; on this
shared 2-core VM only ratios within a row are stable), on the LiteRT interpreter
where installed, with XNNPACK; Keras (a ``tf.function``, no XLA) after them. The fp32
file is timed a second time in the same rounds: the last column, its ratio to the
first, is the run's noise floor for the ratios in its row.

Roofline: MAdds / the peak multiply-add rate of this machine, measured as the best
float32 1024x1024 matmul TensorFlow runs here (all cores); "fp32 / roofline" is how
far TFLite fp32 is from that bound. Where keras.applications has the architecture
(V1-V3), the same run times its model too, converted by the same ``export.to_tflite``
(random weights, BN statistics from the same images): the file a Keras user would
otherwise deploy. Its V3 builds h-swish as x * (ReLU6(x + 3) / 6), which the converter
fuses into a HARD_SWISH op in int8 too, which XNNPACK has no int8 kernel for; ours
builds (x / 6) * ReLU6(x + 3) (``blocks.hard_swish``) and converts float files from
the fused layout (``export.fuse_hard_swish``). The partition columns give the XNNPACK
partitions of each int8 file and the ops XNNPACK left to TFLite's kernels. Where
tf2onnx and ONNX Runtime are installed (``pip install -e ".[onnx]"``), the same model
converted by tf2onnx runs on ONNX Runtime in the same rounds (its CPU provider, the
same threads): the deployment a PyTorch user would pick.

``--op-profile`` adds, per model, TFLite's op profiler on its fp32 and int8 files
(``mobilenet_tf.op_profile``, the same threads): milliseconds per run of each XNNPACK
operator, fp32 beside int8 (kernels of one operator summed, precision dropped from the
name: the int8 file's float stem is its "Convolution IGEMM").
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark, export, op_profile, weights  # noqa: E402
from mobilenet_tf.data import synthetic  # noqa: E402
from mobilenet_tf.heads.facenet import model as facenet  # noqa: E402


def synthetic_images(count, size):
    data = synthetic.synthetic_classification(count, size, seed=1)
    return np.stack([image for image, _ in data.as_numpy_iterator()]).astype("float32")


# Models besides the registry's: the FaceNet student (the V1 paper's Table 14 network,
# width 1.0, 128-d unit embedding).
HEADS = {"facenet_v1": lambda resolution: facenet.build_embedding_model("v1", 1.0, resolution)}


def build(name, resolution, images):
    model = HEADS[name](resolution) if name in HEADS else mobilenet_tf.build(name, input_shape=(resolution,) * 2 + (3,))
    return benchmark.batchnorm_from_data(model, images[:16])


def keras_applications_model(name, resolution, images):
    """keras.applications' model of ``name`` (None where it has none)."""
    if name in HEADS or mobilenet_tf.registry.get_entry(name).published is None:
        return None
    model = weights.keras_application(name, input_shape=(resolution, resolution, 3))
    return benchmark.batchnorm_from_data(model, images[:16])


ONNX_REFUSED = {}  # model name -> why tf2onnx / ONNX Runtime could not run it


def onnx_installed():
    """Whether tf2onnx and ONNX Runtime are installed (``pip install -e ".[onnx]"``)."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def measure(name, resolution, threads, repeats, images, tmp, profile=False):
    """{column: ms} for one model, its TFLite files timed in one alternation (and, with
    ``profile``, "profile": {"fp32" / "int8": OpProfile})."""
    model = build(name, resolution, images)
    calibration = images[:, None]
    files = {"fp32": export.to_tflite(model, os.path.join(tmp, "fp32.tflite")),
             "fp16": export.to_tflite(model, os.path.join(tmp, "fp16.tflite"), "float16"),
             "int8": export.to_tflite(model, os.path.join(tmp, "int8.tflite"), "int8", calibration)}
    peer = keras_applications_model(name, resolution, images)
    if peer is not None:
        files["peer fp32"] = export.to_tflite(peer, os.path.join(tmp, "peer_fp32.tflite"))
        files["peer int8"] = export.to_tflite(peer, os.path.join(tmp, "peer_int8.tflite"), "int8", calibration)
    interpreters = {column: export.TFLiteModel(path, threads) for column, path in files.items()}
    runners = dict(interpreters)
    if onnx_installed():  # the same model on ONNX Runtime, converted by tf2onnx, in the same rounds
        try:
            runners["onnx"] = export.ONNXModel(export.to_onnx(model, os.path.join(tmp, "model.onnx")), threads)
        except Exception as error:  # tf2onnx or ONNX Runtime refused it: a cell "-", the reason printed
            reason = " ".join(str(error).split())  # its end names the op
            ONNX_REFUSED[name] = reason if len(reason) <= 300 else "..." + reason[-300:]
    # The fp32 file once more: its ratio to the first is this run's noise floor for the
    # ratios beside it.
    runners["fp32 again"] = export.TFLiteModel(files["fp32"], threads)
    x = images[:1]
    ms = {column: seconds * 1e3 for column, seconds in
          zip(runners, benchmark.median_seconds(list(runners.values()), x, repeats))}
    keras_fn = tf.function(lambda batch: model(batch, training=False))
    ms["keras"] = benchmark.median_seconds([keras_fn], x, max(10, repeats // 5))[0] * 1e3
    partitions = {column: (it.op_counts().get("DELEGATE", 0), it.ops_outside_delegate())
                  for column, it in interpreters.items()}
    if profile:
        partitions["profile"] = {column: op_profile.op_profile(files[column], threads, repeats)
                                 for column in ("fp32", "int8")}
    return ms, partitions, mobilenet_tf.profile(model).madds, interpreters["fp32"].runtime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="v1,v2,v3_large,v3_small,v4_conv_small,v4_conv_medium,v4_conv_large,"
                                            "v4_hybrid_medium,v4_hybrid_large")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--op-profile", action="store_true", help="also print each model's op profile, fp32 vs int8")
    args = parser.parse_args(argv)

    images = synthetic_images(32, args.resolution)
    peak = benchmark.peak_madds_per_second()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append((name,) + measure(name, args.resolution, args.threads, args.repeats, images, tmp,
                                          args.op_profile))
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, {rows[0][4]} interpreter, {args.threads} threads, "
          f"batch 1, {args.resolution}x{args.resolution}; peak {peak / 1e9:.1f} GMAdds/s (float32 1024^3 matmul)\n")
    print("| model | MAdds | Keras ms | TFLite fp32 ms | fp16 ms | int8 ms | Keras / fp32 | fp32 / int8 | roofline ms "
          "| fp32 / roofline | int8 XNNPACK partitions (ops outside) | keras.applications fp32 ms, int8 ms | "
          "ours / keras.applications fp32 | keras.applications int8 partitions (ops outside) | "
          "ONNX Runtime fp32 ms (tf2onnx) | fp32 file timed again / fp32 (noise) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ms, partitions, madds, _ in rows:
        roofline = madds / peak * 1e3
        peer = (f"{ms['peer fp32']:.2f}, {ms['peer int8']:.2f} | {ms['fp32'] / ms['peer fp32']:.3f}x | "
                f"{_partitions(partitions['peer int8'])}" if "peer int8" in ms else "- | - | -")
        onnx = f"{ms['onnx']:.2f}" if "onnx" in ms else "-"
        print(f"| {name} | {madds / 1e6:.0f}M | {ms['keras']:.1f} | {ms['fp32']:.2f} | {ms['fp16']:.2f} "
              f"| {ms['int8']:.2f} | {ms['keras'] / ms['fp32']:.1f}x | {ms['fp32'] / ms['int8']:.2f}x "
              f"| {roofline:.2f} | {ms['fp32'] / roofline:.1f}x | {_partitions(partitions['int8'])} | {peer} "
              f"| {onnx} | {ms['fp32 again'] / ms['fp32']:.3f}x |", flush=True)
    for name, reason in ONNX_REFUSED.items():
        print(f"\nONNX Runtime did not run {name}: {reason}")
    for name, _, partitions, _, _ in rows:
        if "profile" in partitions:
            print(f"\n{name}: TFLite's op profiler, {args.repeats} runs, {args.threads} threads\n")
            print(op_profile.comparison_table(partitions["profile"]["fp32"], partitions["profile"]["int8"]))


def _partitions(counted):
    count, outside = counted
    return f"{count} ({', '.join(f'{op} x{n}' for op, n in sorted(outside.items())) or 'none'})"


if __name__ == "__main__":
    main()
