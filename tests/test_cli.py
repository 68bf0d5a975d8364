"""`mobilenet-tf` command line."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import mobilenet_tf
from mobilenet_tf import cli


def test_list(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == mobilenet_tf.list_models() and {"v1", "xception", "shufflenet_v2_x1_0"} <= set(names)
    assert "Table 2" in lines[names.index("v3_small")]
    assert cli.main(["list", "--weights"]) == 0
    where = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert list(where) == names
    assert where["v3_small"] == "keras.applications ImageNet (alpha 0.75, 1): weights='imagenet'"
    assert where["v4_hybrid_medium"].startswith("timm ImageNet: timm/mobilenetv4_hybrid_medium.")
    assert where["shufflenet_v2_x1_0"].startswith("none published")


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


@pytest.mark.slow(seconds=11)
def test_console_script_is_installed():
    exe = shutil.which("mobilenet-tf")
    assert exe, "pip install -e . should put mobilenet-tf on PATH"
    proc = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0 and "v3_small_minimalistic" in proc.stdout


@pytest.mark.slow(seconds=26)
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


@pytest.mark.slow(seconds=20)
def test_bench_json_shape_and_op_profile(capsys):
    """Latency rows per backend; with --op-profile, TFLite's op profiler per TFLite file:
    XNNPACK's float and int8 kernels by name, slowest first."""
    assert cli.main(["bench", "v3_small", "--alpha", "0.35", "--resolution", "64", "--backends",
                     "keras,tflite,tflite-int8", "--repeats", "3", "--threads", "2", "--op-profile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in result["results"]] == ["keras", "tflite", "tflite-int8"]
    for row in result["results"]:
        assert 0 < row["latency_ms"] <= row["p90_ms"] and row["images_per_second"] > 0
        assert row["model_bytes"] > 100_000 and 0 < row["peak_share"] < 1
    keras_row, fp32, int8 = result["results"]
    assert fp32["xnnpack_partitions"] == 1 and fp32["ops_outside_xnnpack"] == {} and "op_profile" not in keras_row
    for row, kernel in ((fp32, "Delegate/HardSwish (NC)"), (int8, "Delegate/Convolution (NHWC, QC8) DWConv")):
        kernels = {k["kernel"]: k for k in row["op_profile"]}
        assert kernels[kernel]["nodes"] > 0 and abs(sum(k["share"] for k in kernels.values()) - 1) < 0.02
        shares = [k["share"] for k in row["op_profile"]]
        assert shares == sorted(shares, reverse=True)
    assert cli.main(["bench", "v3_small", "--alpha", "0.35", "--resolution", "32", "--backends", "tflite-fp32",
                     "--repeats", "3", "--op-profile"]) == 0
    printed = capsys.readouterr().out
    assert "tflite-fp32: TFLite's op profiler, 3 runs (1 threads)" in printed and "Delegate/HardSwish (NC)" in printed


def test_export_and_bench_bad_input(capsys):
    assert cli.main(["bench", "v3_small", "--backends", "keras,onnx"]) == 2
    assert "`backends` must be among keras, tflite" in capsys.readouterr().err
    assert cli.main(["export", "v3_small", "--quantize", "int8", "--calibration-images", "0", "--out", "x"]) == 2
    assert "--calibration-images" in capsys.readouterr().err
    assert cli.main(["export", "v3_small", "--weights", "missing.weights.h5", "--out", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- export / bench checks before converting


def _tiny_run(folder, classes=10, config=None):
    """A recipe-like run folder: best.weights.h5 of v3_small 0.35 at 32 px (``classes``
    outputs, include_preprocessing as the recipes build it) and optionally config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(32, 32, 3), classes=classes,
                               include_preprocessing=True)
    model.save_weights(folder / "best.weights.h5")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "best.weights.h5"


def _no_conversion(monkeypatch):
    """Make building a model fail loudly: a check that runs first never gets there."""
    def build(*args, **kwargs):
        raise AssertionError("the model was built before the arguments were checked")
    monkeypatch.setattr(cli, "_build", build)


@pytest.mark.slow(seconds=12)
def test_export_refuses_an_existing_out_without_overwrite(tmp_path, capsys):
    weights = _tiny_run(tmp_path / "run")
    common = ["export", "v3_small", "--alpha", "0.35", "--resolution", "32", "--classes", "10",
              "--weights", str(weights)]
    before = weights.read_bytes()
    # The trained weights are never the output, --overwrite or not.
    for extra in ([], ["--overwrite"]):
        assert cli.main([*common, "--out", str(weights), *extra]) == 2
        assert "is the --weights file" in capsys.readouterr().err
    assert weights.read_bytes() == before
    existing = tmp_path / "old.tflite"
    existing.write_bytes(b"keep me")
    assert cli.main([*common, "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert f"`--out` '{existing}' exists; pass --overwrite" in err and existing.read_bytes() == b"keep me"
    assert cli.main([*common, "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes()[4:8] == b"TFL3"  # a TFLite flatbuffer replaced it


def test_export_checks_the_out_path_before_converting(tmp_path, capsys, monkeypatch):
    _no_conversion(monkeypatch)
    (tmp_path / "afile").write_text("")
    assert cli.main(["export", "v3_small", "--out", str(tmp_path / "afile" / "m.tflite")]) == 2
    assert f"'{tmp_path / 'afile'}' is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["export", "v3_small", "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file path such as" in capsys.readouterr().err
    # Unwritable folder (the tests may run as root, where chmod does not stop writing).
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else
                        real_access(path, mode))
    assert cli.main(["export", "v3_small", "--out", str(tmp_path / "new" / "m.tflite")]) == 2
    assert f"no permission to write in '{tmp_path}'" in capsys.readouterr().err


@pytest.mark.slow(seconds=15)
def test_export_reads_the_recipe_config_beside_the_weights(tmp_path, capsys):
    from mobilenet_tf import export

    # What recipes/imagenet.py writes (config.json; the classes come from the synthetic set).
    weights = _tiny_run(tmp_path / "run", config=dict(model="v3_small", alpha=0.35, image_size=32,
                                                      dataset="synthetic", synthetic_classes=10))
    out = tmp_path / "m.tflite"
    assert cli.main(["export", "v3_small", "--weights", str(weights), "--out", str(out)]) == 0
    lite = export.TFLiteModel(str(out))
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    expected = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(32, 32, 3), classes=10,
                                  weights=str(weights))(x)
    np.testing.assert_allclose(lite(x), expected, atol=1e-5)
    capsys.readouterr()
    # An explicit flag overrides config.json, and the mismatch names the fix.
    assert cli.main(["export", "v3_small", "--classes", "1000", "--weights", str(weights),
                     "--out", str(tmp_path / "n.tflite")]) == 2
    assert "has a 10-class top but the model was built with --classes 1000 (--classes): pass --classes 10" in \
        capsys.readouterr().err
    assert cli.main(["export", "v1", "--weights", str(weights), "--out", str(tmp_path / "n.tflite")]) == 2
    assert "pass 'v3_small' as the name" in capsys.readouterr().err


@pytest.mark.slow(seconds=12)
def test_export_without_config_names_classes_and_refuses_other_recipes(tmp_path, capsys):
    weights = _tiny_run(tmp_path / "bare")
    assert cli.main(["export", "v3_small", "--alpha", "0.35", "--resolution", "32", "--weights", str(weights),
                     "--out", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "has a 10-class top but the model was built with --classes 1000 (default): pass --classes 10." in err
    assert "corrupt" not in err and not (tmp_path / "m.tflite").exists()
    # A detector / segmenter / FaceNet run names a backbone: not a classifier's weights.
    weights = _tiny_run(tmp_path / "seg", config=dict(backbone="v3_small", alpha=0.35, crop_size=32))
    assert cli.main(["export", "v3_small", "--weights", str(weights), "--out", str(tmp_path / "m.tflite")]) == 2
    assert "names a `backbone` ('v3_small'): these are not the weights of a registry classifier" in \
        capsys.readouterr().err


def test_bench_checks_numbers_before_converting(capsys, monkeypatch):
    _no_conversion(monkeypatch)
    for flag, value in (("--threads", "0"), ("--batch", "0"), ("--repeats", "-1")):
        assert cli.main(["bench", "v3_small", flag, value]) == 2
        assert f"`{flag}` must be an integer >= 1; got {value}." in capsys.readouterr().err


def test_no_abbreviated_flags(capsys):
    for argv in (["bench", "v3_small", "--thread", "2"], ["export", "v3_small", "--out", "x", "--over"],
                 ["profile", "v3_small", "--res", "160"], ["compress", "m.keras", "--out", "o", "--clust", "4"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
