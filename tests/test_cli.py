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
