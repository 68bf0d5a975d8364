"""LR-ASPP segmentation latency: Keras vs TFLite (fp32, int8) side by side in one run.

    python benchmarks/lraspp.py                                  # V3-Large and V3-Small at 512x1024, 1024x2048
    python benchmarks/lraspp.py --backbones v3_small --sizes 512x1024 --threads 2 --repeats 5

Batch 1, the paper's segmentation model (RF2, output stride 16, 128 filters, 19
classes). Keras runs as a ``tf.function`` (no XLA); TFLite with ``--threads``
threads and XNNPACK. Keras and TFLite fp32 are timed in alternating rounds;
int8 (calibrated on random images, for speed only) after them. Random weights,
with BatchNormalization statistics from two random images
(``benchmark.batchnorm_from_data``: int8 of a freshly initialised model gets scales
no trained model has). Prints a Markdown table with MAdds and the ratio Keras / TFLite.

``--op-profile`` adds, per row, TFLite's op profiler on the fp32 and int8 files just
timed (``benchmark.bench``'s ``op_profile``: the same threads, ``--repeats`` runs):
milliseconds per run of each operator, fp32 beside int8.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark, op_profile  # noqa: E402
from mobilenet_tf.heads import segmentation  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="v3_large,v3_small")
    parser.add_argument("--sizes", default="512x1024,1024x2048")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 conversion and timing")
    parser.add_argument("--op-profile", action="store_true", help="also print each row's op profile, fp32 vs int8")
    args = parser.parse_args(argv)
    if args.op_profile and args.no_int8:
        parser.error("--op-profile compares the fp32 and int8 files: drop --no-int8")

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, TFLite threads {args.threads}, batch 1\n")
    print("| backbone | input | MAdds | Keras ms | TFLite fp32 ms | Keras / TFLite | TFLite int8 ms |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    profiles = []
    for backbone in args.backbones.split(","):
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.split("x"))
            model = segmentation.build_lraspp(backbone, num_classes=19, input_shape=(height, width, 3))
            benchmark.batchnorm_from_data(model, rng.uniform(0, 255, (2, height, width, 3)).astype("float32"))
            madds = mobilenet_tf.profile(model).madds
            keras, fp32 = benchmark.bench(model, ["keras", "tflite"], threads=args.threads, repeats=args.repeats,
                                          op_profile=args.op_profile)
            keras_ms, fp32_ms = keras["latency_ms"], fp32["latency_ms"]
            int8_ms = "-"
            if not args.no_int8:
                calibration = [rng.uniform(0, 255, (1, height, width, 3)).astype("float32") for _ in range(4)]
                (int8,) = benchmark.bench(model, ["tflite-int8"], threads=args.threads, repeats=args.repeats,
                                          calibration=calibration, op_profile=args.op_profile)
                int8_ms = f"{int8['latency_ms']:.0f}"
                if args.op_profile:
                    profiles.append((f"{backbone} {size}", [_profile(row, args) for row in (fp32, int8)]))
            print(f"| {backbone} | {height}x{width} | {madds / 1e9:.2f}B | {keras_ms:.0f} | {fp32_ms:.0f} "
                  f"| {keras_ms / fp32_ms:.2f} | {int8_ms} |", flush=True)
    for name, (fp32, int8) in profiles:
        print(f"\n{name}: TFLite's op profiler, {args.repeats} runs, {args.threads} threads\n")
        print(op_profile.comparison_table(fp32, int8))


def _profile(row, args):
    """The ``op_profile.OpProfile`` of a ``benchmark.bench`` TFLite row (its kernels,
    kept there as JSON-ready dicts)."""
    kernels = [op_profile.NodeType(k["kernel"], k["nodes"], k["ms"], k["share"]) for k in row["op_profile"]]
    return op_profile.OpProfile(None, args.threads, args.repeats, kernels, "")


if __name__ == "__main__":
    main()
