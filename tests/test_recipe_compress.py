"""`python recipes/compress.py`: train, prune, cluster, post-training int8 TFLite and the
Deep Compression report, under tf_keras in its own process (the script sets
TF_USE_LEGACY_KERAS). The QAT branch: test_compress.py's CLI test (V3-Small)."""

import contextlib
import io

import numpy as np
import pytest

from conftest import read_metrics, run_script
import mobilenet_tf
from mobilenet_tf import compressed_format, deep_compression, export, weights
from mobilenet_tf.training import recipe

# V1 0.5 at 48 px converts to TFLite four times faster than the default V3-Small.
SMALL = ["--model", "v1", "--alpha", "0.5", "--input-size", "48", "--train-steps", "150", "--prune-steps", "80",
         "--cluster-steps", "30", "--no-qat", "--train-examples", "1280", "--eval-examples", "200",
         "--deterministic"]


@pytest.mark.slow(seconds=190)
def test_compress_pipeline_and_size_report(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_script("recipes/compress.py", *SMALL, "--output-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["float_accuracy"] >= 0.4, m  # 10 classes: chance is 0.1
    assert min(m["pruned_accuracy"], m["clustered_accuracy"], m["int8_tflite_accuracy"]) >= m["float_accuracy"] - 0.1
    assert abs(m["sparsity"] - 0.75) < 0.02 and m["max_unique_values"] <= 17, m  # 16 shared values + the zero
    # Post-training int8 of the clustered model: calibrated on training images, it keeps
    # the float model's top-1 on >= 90% of the evaluation images (measured 0.96).
    assert m["int8_method"] == "post-training" and m["int8_agreement"] >= 0.9, m
    stages = {s["stage"]: s for s in m["stages"]}
    assert list(stages) == ["float", "pruned", "clustered", "int8"]
    # Pruning and clustering pay off after entropy coding; int8 also shrinks the raw file ~4x.
    assert stages["pruned"]["gzip_bytes"] < 0.5 * stages["float"]["gzip_bytes"]
    assert stages["clustered"]["gzip_bytes"] < stages["pruned"]["gzip_bytes"]
    assert stages["int8"]["bytes"] < 0.35 * stages["float"]["bytes"]
    assert m["int8_gzip_ratio"] == pytest.approx(stages["float"]["bytes"] / stages["int8"]["gzip_bytes"])
    assert m["int8_gzip_ratio"] >= 6, m
    for name in ("report.md", "size_accuracy.png", "float.tflite", "int8.tflite", "compressed.npz", "config.json",
                 "compressed.dc"):
        assert (run_dir / name).exists(), name
    # Deep Compression's file: 75% sparse kernels with 16 shared values (5-bit indices)
    # and Huffman coding, against the float32 weights; it restores the compressed
    # weights, here into a Keras 3 model (the file was written under tf_keras).
    data = (run_dir / "compressed.dc").read_bytes()
    model = mobilenet_tf.build("v1", alpha=0.5, input_shape=(48, 48, 3), classes=10, include_preprocessing=True)
    assert m["compressed_bytes"] == len(data) and m["float32_weight_bytes"] == 4 * len(np.concatenate(
        [w.ravel() for w in model.get_weights()]))
    # Shared values: conv1, the 13 pointwise kernels and the classifier (the pipeline prunes
    # and clusters Conv2D / Dense kernels; the depthwise ones stay float32). Measured 9.4x.
    assert m["compression_ratio"] >= 5 and m["compressed_file"]["shared_variables"] == 15, m
    compressed_format.decode(data, model)
    expected = mobilenet_tf.build("v1", alpha=0.5, input_shape=(48, 48, 3), classes=10, include_preprocessing=True)
    weights.load_by_name(expected, run_dir / "compressed.npz")
    for a, b in zip(model.get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(a, b)  # equal values (a pruned -0.0 comes back as 0.0)
    report = (run_dir / "report.md").read_text().splitlines()
    assert len(report) == 6 + 3 + 2 + 15 + 2 and report[-1].startswith("| **file**"), report
    # The int8 file really is integer: its kernels are int8 tensors.
    interpreter = export.TFLiteModel(str(run_dir / "int8.tflite")).interpreter
    assert sum(d["dtype"] is np.int8 for d in interpreter.get_tensor_details()) > 20


def _refused_in_process(*args):
    """The compression recipe's command line in this (Keras 3) process: its checks run
    before it needs tf_keras. (Executing recipes/compress.py here would set
    TF_USE_LEGACY_KERAS for every later child process of this worker.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        recipe.recipe_main(deep_compression.main, deep_compression.Config, list(args))
    return exit_.value.code, err.getvalue()


@pytest.mark.parametrize("args,message", [
    (["--clusters", "1"], "`--clusters` must be >= 2"),
    (["--weights", "missing.npz"], "`--weights` 'missing.npz' is not a file"),
])
def test_compress_bad_arguments_exit_2(tmp_path, args, message):
    code, stderr = _refused_in_process(*args, "--output-dir", str(tmp_path / "run"))
    assert code == 2 and message in stderr, stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow(seconds=5)
def test_the_script_exits_2_on_bad_input_in_its_own_process(tmp_path):
    proc = run_script("recipes/compress.py", "--prune", "1.0", "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "`--prune` (target sparsity) must be in (0, 1)" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
