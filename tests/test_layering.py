"""Which package may import which: deployment (export, benchmark, compress), the models
and the heads never import the training package (see README's architecture section)."""

import subprocess
import sys

import pytest

BELOW_TRAINING = ["mobilenet_tf", "mobilenet_tf.export", "mobilenet_tf.op_profile", "mobilenet_tf.benchmark",
                  "mobilenet_tf.compress",
                  "mobilenet_tf.compressed_format",
                  "mobilenet_tf.walkers", "mobilenet_tf.profile", "mobilenet_tf.weights", "mobilenet_tf.zoo",
                  "mobilenet_tf.heads.ssdlite", "mobilenet_tf.heads.ssdlite.deploy", "mobilenet_tf.heads.segmentation",
                  "mobilenet_tf.heads.facenet", "mobilenet_tf.heads.faster_rcnn"]


@pytest.mark.slow(seconds=6)
def test_deployment_and_models_do_not_import_training():
    script = ("import sys\n" + "".join(f"import {m}\n" for m in BELOW_TRAINING)
              + "print(sorted(m for m in sys.modules if m.startswith('mobilenet_tf.training')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
