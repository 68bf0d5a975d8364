"""float32 vs mixed precision vs XLA for each backbone, side by side in one run.

    python benchmarks/precision.py                      # on whatever device TensorFlow sees
    python benchmarks/precision.py --batch 128 --models v3_large

For every model: inference images/s in float32, mixed precision (mixed_float16 on
GPU, mixed_bfloat16 on CPU/TPU) and float32 + XLA (``jit_compile=True``), their
ratios to float32, the largest logit difference of mixed vs float32 (same weights),
and one SGD training step per mode to show it compiles.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import mobilenet_tf  # noqa: E402


def build(name, policy, shape, weights):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = mobilenet_tf.build(name, input_shape=shape, classifier_activation=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if weights is not None:
        model.set_weights(weights)
    return model


def images_per_second(fn, x, repeats):
    for _ in range(3):
        fn(x).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - start)
    return x.shape[0] / statistics.median(times)


def train_step_ok(model, x, jit):
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.train_on_batch(x, np.zeros(x.shape[0], "int32"))
    return bool(np.isfinite(loss))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="v1,v2,v3_large,v3_small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = "mixed_float16" if gpu else "mixed_bfloat16"
    device = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get(
        "device_name", "GPU") if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"TensorFlow {tf.__version__} on {device}, batch {args.batch}, {args.resolution}px\n")
    print(f"| model | float32 img/s | {mixed} img/s | ratio | float32+XLA img/s | ratio "
          "| max logit diff (mixed) | train step fp32 / mixed / XLA |")
    print("|---|---|---|---|---|---|---|---|")
    shape = (args.resolution, args.resolution, 3)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args.batch, *shape)).astype("float32"))
    for name in args.models.split(","):
        fp32 = build(name, "float32", shape, None)
        for layer in fp32.layers:  # non-trivial BN statistics so outputs carry signal
            if isinstance(layer, keras.layers.BatchNormalization):
                g, b, m, v = layer.get_weights()
                layer.set_weights([g, b + 0.05, m, v * 0.5])
        low = build(name, mixed, shape, fp32.get_weights())
        xin = x if name.startswith("v3") else x / 127.5 - 1
        run_fp32 = tf.function(lambda t: fp32(t, training=False))
        run_mixed = tf.function(lambda t: low(t, training=False))
        run_xla = tf.function(lambda t: fp32(t, training=False), jit_compile=True)
        rates = [images_per_second(fn, xin, args.repeats) for fn in (run_fp32, run_mixed, run_xla)]
        ref = run_fp32(xin).numpy()
        diff = np.abs(run_mixed(xin).numpy() - ref).max() / max(np.abs(ref).max(), 1e-12)
        steps = [train_step_ok(build(name, policy, shape, None), xin[:8], jit)
                 for policy, jit in (("float32", False), (mixed, False), ("float32", True))]
        print(f"| {name} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f} | {rates[2]:.0f} "
              f"| {rates[2] / rates[0]:.2f} | {diff:.1e} (relative) | {' / '.join('ok' if s else 'NaN' for s in steps)} |",
              flush=True)


if __name__ == "__main__":
    main()
