"""Every family side by side at 224: params, MAdds, Keras and TFLite batch-1 CPU
latency, and the ImageNet top-1 its paper reports. Prints the README's
comparison table.

    python benchmarks/families.py                     # all families, 2 TFLite threads
    python benchmarks/families.py --models v3_small,shufflenet_v2_x1_0 --repeats 20

Keras runs as a ``tf.function`` (no XLA), TFLite fp32 through ``export.to_tflite``
with XNNPACK; both are timed in alternating rounds of one run on random input.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark  # noqa: E402

# ImageNet top-1 (%) as the papers report it (single crop), and where.
PAPER_TOP1 = {
    "v1": (70.6, "V1 Table 8"),
    "v2": (72.0, "V2 Table 4"),
    "v3_large": (75.2, "V3 Table 3"),
    "v3_small": (67.4, "V3 Table 3"),
    "squeezenet1_0": (57.5, "SqueezeNet Table 2"),
    "squeezenet1_1": (58.2, "torchvision [1]"),
    "shufflenet_v1_g3": (67.4, "V1 Table 2 (32.6% error)"),
    "shufflenet_v2_x0_5": (60.3, "V2 Table 5"),
    "shufflenet_v2_x1_0": (69.4, "V2 Table 5"),
    "shufflenet_v2_x1_5": (72.6, "V2 Table 5"),
    "shufflenet_v2_x2_0": (74.9, "V2 Table 5"),
    "xception": (79.0, "Xception Table 1 (299 px)"),
}
DEFAULT_MODELS = ("v1,v2,v3_large,v3_small,squeezenet1_0,squeezenet1_1,shufflenet_v1_g3,shufflenet_v1_g8,"
                  "shufflenet_v2_x0_5,shufflenet_v2_x1_0,shufflenet_v2_x1_5,shufflenet_v2_x2_0,xception")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, TFLite threads {args.threads}, batch 1, "
          f"{args.resolution}x{args.resolution}\n")
    print("| model | params | MAdds | Keras ms | TFLite ms | paper top-1 | source |")
    print("|---|---|---|---|---|---|---|")
    shape = (args.resolution, args.resolution, 3)
    for name in args.models.split(","):
        model = mobilenet_tf.build(name, input_shape=shape)
        profile = mobilenet_tf.profile(model)
        keras_ms, tflite_ms = (r["latency_ms"] for r in benchmark.bench(
            model, ["keras", "tflite"], threads=args.threads, repeats=args.repeats))
        top1, source = PAPER_TOP1.get(name, (None, ""))
        print(f"| {name} | {profile.params / 1e6:.2f}M | {profile.madds / 1e6:.0f}M | {keras_ms:.1f} "
              f"| {tflite_ms:.1f} | {'-' if top1 is None else f'{top1:.1f}'} | {source} |", flush=True)


if __name__ == "__main__":
    main()
