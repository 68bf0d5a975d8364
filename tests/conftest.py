import contextlib
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
import unittest.mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs two xdist workers on two cores, each often waiting on a recipe in a child
# process (which inherits this): one TensorFlow intra-op thread per process keeps them from
# fighting over the cores (two concurrent recipe runs: 42 s with the default threads, 32 s
# with one each). Set TF_NUM_INTRAOP_THREADS to override.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# And tf.data's autotuning off (mobilenet_tf.data.AUTOTUNE_ENV): its per-iterator thread
# left both processes idle at times, 229 of the suite's 2,050 core-seconds; 40 without it.
os.environ.setdefault("MOBILENET_TF_DATA_AUTOTUNE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import config as tf_config  # noqa: E402  (disable_op_determinism)

from mobilenet_tf import registry  # noqa: E402
from mobilenet_tf.training import strategy  # noqa: E402

# Two logical CPU devices in every test process, before anything touches a device, so that
# `--strategy mirrored --num-cpu-devices 2` recipe runs need no fresh process; the default
# strategy (every other test) places everything on the first one. And one inter-op thread,
# what `--deterministic` asks for (strategy.set_seeds; settable only before TensorFlow
# initialises), so that seeded, deterministic learning runs need none either.
MIRRORED_CPUS = 2
strategy.split_cpu(MIRRORED_CPUS)
tf.config.threading.set_inter_op_parallelism_threads(1)


@pytest.fixture(autouse=True)
def _own_collective_keys():
    """A MirroredStrategy's collective ops are keyed from 1 in every instance: a second
    strategy over the same CPUs in one process reused the first one's keys and failed
    ("Shape mismatch in the collective instance 100"). Each test starts past the last
    one's keys (``_collective_key_base``, which TensorFlow sets only in its tests)."""
    tf.distribute.MirroredStrategy._collective_key_base += 10_000

# Every (registry name, alpha) keras.applications publishes ImageNet weights for, among
# the families with a width multiplier: derived from the registry's records.
PUBLISHED_VARIANTS = [(record.name, alpha) for record in registry.variants()
                      if record.published and record.width_argument == "alpha" for alpha in record.published.alphas]


def slow_unless_representative(params, representatives, seconds):
    """``params`` for ``parametrize`` with the ones not in ``representatives`` marked
    ``slow(seconds=...)``: the development loop keeps those, the full suite runs all."""
    return [p if p in representatives else pytest.param(*(p if isinstance(p, tuple) else (p,)),
                                                        marks=pytest.mark.slow(seconds=seconds))
            for p in params]


def randomize_batchnorm(model, seed=0):
    """Give every BatchNormalization non-trivial gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.1, beta.shape).astype("float32"),
                rng.normal(0, 0.1, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])


def run(model, x):
    """Eager inference: numpy outputs (a dict for endpoint models). Cheaper than
    ``predict``, which traces a function for every new model."""
    out = model(x, training=False)
    if isinstance(out, dict):
        return {key: np.asarray(value) for key, value in out.items()}
    return np.asarray(out)


@pytest.fixture
def images():
    def make(n=2, size=96, low=-1.0, high=1.0, seed=0):
        rng = np.random.default_rng(seed)
        return rng.uniform(low, high, (n, size, size, 3)).astype("float32")
    return make


ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(script, *args, env=None, timeout=1800, wait=True):
    """Run ``recipes/<script>`` (or another repo path) in a fresh Python process;
    a ``CompletedProcess`` (text output), or a ``Popen`` with ``wait=False``.

    ``timeout`` only catches hangs: the longest recipe test takes about 5 minutes on
    2 cores, and twice that on a VM whose cores are half taken by neighbours (measured
    here: a 1024x1024 matmul at 45 instead of 84-90 GMAdds/s)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    cmd = [sys.executable, str(ROOT / script), *args]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


_RECIPES = {}


def load_recipe(name):
    """``recipes/<name>.py`` as a module (they are scripts, not a package), loaded once per
    process and registered in ``sys.modules`` as an import would: AutoGraph looks
    functions' modules up there (unregistered, it could not convert a recipe's tf.data
    lambdas: a warning whose log record kept the whole run alive until the test's
    teardown). ``recipes/compress.py`` sets TF_USE_LEGACY_KERAS for its own process:
    restored here."""
    if name not in _RECIPES:
        legacy = os.environ.get("TF_USE_LEGACY_KERAS")
        module_name = f"recipe_{name}"
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "recipes" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            if legacy is None:
                os.environ.pop("TF_USE_LEGACY_KERAS", None)
            else:
                os.environ["TF_USE_LEGACY_KERAS"] = legacy
        _RECIPES[name] = module
    return _RECIPES[name]


def run_recipe_in_process(script, *args):
    """Run ``recipes/<script>``'s command line in this process: no interpreter and
    TensorFlow start-up (measured: 1.7 s less wall and CPU time a learning run). Any run
    but a killed one or one of several workers: the suite's processes have what
    ``--num-cpu-devices 2`` and ``--deterministic`` need (above), and op determinism, which
    a deterministic run turns on, is turned off again after it. A ``CompletedProcess``
    with the exit code and the captured stdout / stderr, like ``run_script``'s. Exceptions
    other than ``SystemExit`` propagate (a traceback fails the test)."""
    module = load_recipe(pathlib.Path(script).stem)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            unittest.mock.patch.object(sys, "argv", [str(ROOT / script), *args]):  # messages name the script
        try:
            module.cli(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            tf_config.disable_op_determinism()  # (--deterministic) off again for the tests after it
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def h5_arrays(path):
    """Every dataset of an HDF5 file (e.g. a .weights.h5), in file order, as numpy arrays."""
    import h5py

    with h5py.File(path) as f:
        arrays = []
        f.visititems(lambda name, obj: arrays.append(np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None)
        return arrays


def assert_same_detections(actual, expected, atol=1e-5, empty_slots_alike=True):
    """Two padded detection dicts (``num_detections`` [B], ``boxes`` [B, N, 4],
    ``scores`` / ``classes`` [B, N]) hold the same detections per image.

    Rows whose scores differ by less than ``atol`` may come in either order
    (NMS sorts by score, so a float ulp can swap two near-tied rows between
    a SavedModel and the Keras model); every row must still be matched once.
    ``empty_slots_alike``: the padding after them is equal too (False where the
    two fill it differently: the TFLite detector's empty classes are 0, Keras'
    ``combined_non_max_suppression`` + 1 gives 1).
    """
    actual = {k: np.asarray(v) for k, v in actual.items()}
    expected = {k: np.asarray(v) for k, v in expected.items()}
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    for image, count in enumerate(expected["num_detections"].astype(int)):
        rows = [np.concatenate([[d["scores"][image, i], d["classes"][image, i]], d["boxes"][image, i]])
                for d in (actual, expected) for i in range(count)]
        got, want = rows[:count], rows[count:]
        np.testing.assert_allclose([r[0] for r in got], [r[0] for r in want], atol=atol)  # sorted scores
        unmatched = list(range(count))
        for row in got:
            match = next((j for j in unmatched if np.allclose(row, want[j], rtol=0, atol=atol)), None)
            assert match is not None, f"image {image}: detection {row} has no counterpart in {np.array(want)}"
            unmatched.remove(match)
        for key in ("boxes", "scores", "classes") if empty_slots_alike else ():
            np.testing.assert_array_equal(actual[key][image, count:], expected[key][image, count:], err_msg=key)


def read_metrics(run_dir):
    return json.loads((pathlib.Path(run_dir) / "metrics.json").read_text())


def read_history(run_dir):
    """history.csv as {column: [value per epoch]} (floats; the header's columns only)."""
    lines = (pathlib.Path(run_dir) / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return {name: [float(line.split(",")[i]) for line in lines[1:]] for i, name in enumerate(header)}


def one_worker_tf_config():
    """TF_CONFIG of a one-worker MultiWorkerMirroredStrategy cluster on a free local port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return json.dumps({"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}})


def run_legacy_keras(script, timeout=1200):
    """Run a Python ``script`` under tf_keras (TF_USE_LEGACY_KERAS=1, as TFMOT needs) in a
    fresh process; it prints ``RESULT`` + json, returned parsed."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def pytest_collection_modifyitems(config, items):
    """Slow tests first, the longest first (``pytest.mark.slow(seconds=...)``, measured
    on 2 cores): xdist (``--maxschedchunk 1`` in pytest.ini) hands the tests out in this
    order to whichever worker is free, so the long ones run side by side from the start
    and the short ones fill in at the end, instead of one long test running alone."""
    def seconds(item):
        marker = item.get_closest_marker("slow")
        return -1 if marker is None else marker.kwargs.get("seconds", 0)

    items.sort(key=seconds, reverse=True)  # stable: ties keep their collection order
