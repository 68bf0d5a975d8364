"""Latency measurement shared by the benchmarks (and, later, ``mobilenet-tf bench``)."""

import statistics
import time

import numpy as np


def median_seconds(fns, x, repeats, warmup=3):
    """Median seconds per call of each function in ``fns`` on input ``x``.

    The functions are timed in alternating rounds, so machine noise hits them
    alike and their ratio is meaningful. Each call's result is converted to
    numpy, so asynchronous work is included.
    """
    for fn in fns:
        for _ in range(warmup):
            np.asarray(fn(x))
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, samples):
            start = time.perf_counter()
            np.asarray(fn(x))
            bucket.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]
