"""`mobilenet-tf` command line."""

import json
import os
import shutil
import subprocess

import mobilenet_tf
from mobilenet_tf import cli


def test_list(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == mobilenet_tf.list_models() and {"v1", "xception", "shufflenet_v2_x1_0"} <= set(names)
    assert "Table 2" in lines[names.index("v3_small")]


def test_profile_json_and_per_layer(capsys):
    assert cli.main(["profile", "v3_small", "--alpha", "0.75", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 2_051_552 and round(result["madds"] / 1e6, 1) == 43.4
    assert cli.main(["profile", "v3_large", "--minimalistic", "--resolution", "160", "--no-top", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "expanded_conv_14_project" in out and "squeeze_excite" not in out


def test_summary(capsys):
    assert cli.main(["summary", "v1", "--alpha", "0.25", "--resolution", "128", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "conv_preds" in out and "mobilenet_v1_0.25_128" in out


def test_errors_are_messages_not_tracebacks(capsys):
    assert cli.main(["profile", "v4"]) == 2
    assert "unknown model name 'v4'" in capsys.readouterr().err
    assert cli.main(["profile", "v1", "--minimalistic"]) == 2
    assert "unknown argument 'minimalistic'" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("mobilenet-tf")
    assert exe, "pip install -e . should put mobilenet-tf on PATH"
    proc = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0 and "v3_small_minimalistic" in proc.stdout


def test_export_fp32_equals_keras_and_int8_is_smaller(tmp_path, capsys):
    import numpy as np

    from mobilenet_tf import export

    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(96, 96, 3), classifier_activation=None)
    model.save_weights(tmp_path / "m.weights.h5")
    common = ["v3_small", "--alpha", "0.35", "--resolution", "96", "--weights", str(tmp_path / "m.weights.h5")]
    assert cli.main(["export", *common, "--out", str(tmp_path / "fp32.tflite")]) == 0
    assert cli.main(["export", *common, "--quantize", "int8", "--calibration-images", "8",
                     "--out", str(tmp_path / "int8.tflite")]) == 0
    assert "bytes (int8)" in capsys.readouterr().out
    x = np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    # The CLI builds with a softmax top; compare probabilities.
    probabilities = np.asarray(mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(96, 96, 3),
                                                  weights=str(tmp_path / "m.weights.h5"))(x))
    np.testing.assert_allclose(export.TFLiteModel(str(tmp_path / "fp32.tflite"))(x), probabilities, atol=1e-5)
    assert os.path.getsize(tmp_path / "int8.tflite") * 2.5 < os.path.getsize(tmp_path / "fp32.tflite")


def test_bench_json_shape(capsys):
    assert cli.main(["bench", "v3_small", "--alpha", "0.35", "--resolution", "64", "--backends", "keras,tflite",
                     "--repeats", "3", "--threads", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in result["results"]] == ["keras", "tflite"]
    for row in result["results"]:
        assert 0 < row["latency_ms"] <= row["p90_ms"] and row["images_per_second"] > 0
        assert row["model_bytes"] > 100_000 and 0 < row["peak_share"] < 1


def test_export_and_bench_bad_input(capsys):
    assert cli.main(["bench", "v3_small", "--backends", "keras,onnx"]) == 2
    assert "`backends` must be among keras, tflite" in capsys.readouterr().err
    assert cli.main(["export", "v3_small", "--quantize", "int8", "--calibration-images", "0", "--out", "x"]) == 2
    assert "--calibration-images" in capsys.readouterr().err
    assert cli.main(["export", "v3_small", "--weights", "missing.weights.h5", "--out", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
