"""Latency measurement: the timer the benchmarks share and ``mobilenet-tf bench``.

``bench(model, backends=...)`` times one model on Keras and TFLite backends at
batch size B: warm-up calls, then the median and 90th-percentile latency,
images/s, the model's bytes, and the multiply-adds per second as a share of this
machine's measured peak (a large float32 matmul: the rate TensorFlow's best-tuned
kernel reaches here, so the share is a roofline-style utilisation, not a vendor
peak).
"""

import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from mobilenet_tf import export
from mobilenet_tf import op_profile as op_profiler

# "keras", then "tflite-<q>" for each post-training quantization name of export.FORMATS
# (the value: that name; None for Keras).
BACKENDS = {"keras": None, **{f"tflite-{name}": name for name in export.FORMATS}}
# Older backend names, still accepted: "tflite" is fp32, "tflite-fp16" float16.
BACKEND_ALIASES = {"tflite": "tflite-fp32", "tflite-fp16": "tflite-float16"}


def backend_quantization(backend):
    """The quantization name a backend converts with (None for "keras"); aliases accepted."""
    return BACKENDS[BACKEND_ALIASES.get(backend, backend)]


def median_seconds(fns, x, repeats, warmup=3):
    """Median seconds per call of each function in ``fns`` on input ``x``.

    The functions are timed in alternating rounds, so machine noise hits them
    alike and their ratio is meaningful; each round starts one function later
    than the last, so none always runs first (in a fixed order, one TFLite file
    timed first and again last in every round measured up to 2% apart; two
    interpreters of one file still differ by up to 3% here, the floor
    ``benchmarks/deploy.py`` prints). Each call's result is converted to
    numpy, so asynchronous work is included.
    """
    return [statistics.median(s) for s in _samples(fns, x, repeats, warmup)]


def _samples(fns, x, repeats, warmup):
    for fn in fns:
        for _ in range(warmup):
            np.asarray(fn(x))
    samples = [[] for _ in fns]
    for round_index in range(repeats):
        for k in range(len(fns)):
            index = (round_index + k) % len(fns)
            start = time.perf_counter()
            np.asarray(fns[index](x))
            samples[index].append(time.perf_counter() - start)
    return samples


def peak_madds_per_second(size=1024, repeats=5):
    """Multiply-adds per second of a float32 ``size`` x ``size`` matmul, the best of ``repeats``."""
    a = tf.random.uniform((size, size))
    matmul = tf.function(lambda m: tf.matmul(m, m))
    matmul(a).numpy()
    best = min(_samples([matmul], a, repeats, warmup=1)[0])
    return size ** 3 / best


def batchnorm_from_data(model, images):
    """Set every BatchNormalization's moving mean and variance to its batch statistics
    on ``images`` (N, H, W, 3), nested models included.

    A randomly initialised model keeps mean 0 / variance 1, so its activations shrink
    layer after layer (to ~1e-6 in V3); int8 then gets scales XNNPACK refuses (an
    ADD whose input/output scale ratio is below 2^-10 falls back to TFLite's own
    kernels) and times a graph no trained model has. With data statistics the
    activations have a trained network's scale. Timing only: accuracy stays random.
    """
    from mobilenet_tf import walkers

    norms = [layer for layer in walkers.flat_layers(model) if type(layer).__name__ == "BatchNormalization"]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(tf.convert_to_tensor(images, tf.float32), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return model


def _weight_bytes(model):
    return sum(int(np.prod(w.shape)) * np.dtype(getattr(w.dtype, "as_numpy_dtype", w.dtype)).itemsize
               for w in model.weights)


def check_backends(backends):
    unknown = [b for b in backends if b not in BACKENDS and b not in BACKEND_ALIASES]
    if unknown or not backends:
        raise ValueError(f"`backends` must be among {', '.join([*BACKENDS, *BACKEND_ALIASES])}; got "
                         f"{unknown or backends}.")


def bench(model, backends=("keras", "tflite"), batch=1, threads=None, repeats=30, warmup=3,
          calibration=None, madds=None, runtime=None, op_profile=False):
    """Latency of ``model`` on each backend, timed in alternating rounds (so their
    ratios are fair) on one random input.

    Args:
        model: a Keras 3 model with a static input size.
        backends: names from ``BACKENDS`` (or ``BACKEND_ALIASES``); each result
            row keeps the name as given.
        batch: batch size of the timed input (random pixels in [0, 255]).
        threads: TFLite interpreter threads (None: TFLite's default).
        calibration: input batches for "tflite-int8" (default: 8 random batches;
            fine for timing, not for accuracy).
        madds: the model's multiply-adds per image, for the utilisation column.
        runtime: TFLite interpreter, "litert" or "tensorflow" (None: LiteRT where
            installed).
        op_profile: also profile each TFLite file with TFLite's op profiler
            (``op_profile.op_profile``, ``threads`` or 1, ``repeats`` runs).

    Returns:
        A list of dicts: backend, latency_ms (median), p90_ms, images_per_second,
        model_bytes, with ``madds`` also madds_per_ms and peak_share; TFLite rows
        also runtime, xnnpack_partitions and ops_outside_xnnpack ({op: count} of
        the ops XNNPACK leaves to TFLite's kernels) and, with ``op_profile``,
        op_profile: [{kernel, nodes, ms, share}], slowest first.
    """
    check_backends(backends)
    shape = (batch,) + tuple(model.input_shape[1:])
    if None in shape:
        raise ValueError(f"bench needs a model with a static input size; got input shape {model.input_shape}.")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, shape).astype("float32")
    peak = peak_madds_per_second() if madds else None
    runs = []  # (backend, callable, model bytes, .tflite path or None), in the order asked
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "keras":
                runs.append((backend, tf.function(lambda images: model(images, training=False)),
                             _weight_bytes(model), None))
                continue
            quantization = backend_quantization(backend)
            data = calibration
            if quantization == "int8" and data is None:
                data = [rng.uniform(0, 255, (1,) + shape[1:]).astype("float32") for _ in range(8)]
            path = export.to_tflite(model, os.path.join(tmp, f"{len(runs)}_{backend}.tflite"), quantization, data)
            runs.append((backend, export.TFLiteModel(path, threads, runtime), os.path.getsize(path), path))
        # Timed while the files exist (the interpreters may map them).
        results = []
        for (backend, fn, size, path), samples in zip(runs, _samples([run[1] for run in runs], x, repeats, warmup)):
            samples = sorted(samples)
            median = statistics.median(samples)
            row = dict(backend=backend, latency_ms=median * 1e3,
                       p90_ms=samples[min(len(samples) - 1, int(0.9 * len(samples)))] * 1e3,
                       images_per_second=batch / median, model_bytes=int(size))
            if path is not None:
                row["runtime"] = fn.runtime
                row["xnnpack_partitions"] = fn.op_counts().get("DELEGATE", 0)
                row["ops_outside_xnnpack"] = fn.ops_outside_delegate()
                if op_profile:
                    profile = op_profiler.op_profile(path, threads or 1, repeats, warmup, batch)
                    row["op_profile"] = [dict(kernel=k.name, nodes=k.count, ms=k.ms, share=k.share)
                                         for k in profile.by_type]
            if madds:
                row["madds_per_ms"] = madds * batch / (median * 1e3)
                row["peak_share"] = madds * batch / median / peak
            results.append(row)
    return results
