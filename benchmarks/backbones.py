"""Our backbones vs keras.applications: CPU latency side by side in one run.

    python benchmarks/backbones.py                 # all four families, batch 1 and 32
    python benchmarks/backbones.py --models v3_small --batches 1 --repeats 50

Both models are compiled the same way (``tf.function``, no XLA) and timed in
alternating rounds so machine noise hits both alike. Prints a Markdown table:
median latency of each, the ratio ours / keras (target <= 1.05: same graph,
same speed), params and multiply-adds.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark  # noqa: E402
from mobilenet_tf import weights  # noqa: E402


def compiled(model):
    return tf.function(lambda x: model(x, training=False), jit_compile=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="v1,v2,v3_large,v3_small")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=0, help="0: 100 at batch 1, 10 at larger batches")
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, input {args.resolution}x{args.resolution}\n")
    print("| model | batch | ours ms | keras.applications ms | ratio | params | MAdds |")
    print("|---|---|---|---|---|---|---|")
    shape = (args.resolution, args.resolution, 3)
    for name in args.models.split(","):
        ours = mobilenet_tf.build(name, input_shape=shape)
        ref = weights.keras_application(name, input_shape=shape)
        weights.load_keras_applications_weights(ours, ref)
        prof = mobilenet_tf.profile(ours)
        fns = [compiled(ours), compiled(ref)]
        for batch in (int(b) for b in args.batches.split(",")):
            x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch, *shape)).astype("float32"))
            repeats = args.repeats or (100 if batch == 1 else 10)
            ours_s, ref_s = benchmark.median_seconds(fns, x, repeats)
            print(f"| {name} | {batch} | {ours_s * 1e3:.1f} | {ref_s * 1e3:.1f} | {ours_s / ref_s:.2f} "
                  f"| {prof.params / 1e6:.2f}M | {prof.madds / 1e6:.1f}M |", flush=True)


if __name__ == "__main__":
    main()
