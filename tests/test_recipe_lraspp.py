"""`python recipes/lraspp_cityscapes.py` end to end: learning, TFLite, eval-only, distribution, bad input."""


import numpy as np
import pytest

from conftest import read_metrics, run_recipe_in_process, run_refusal, run_script
from mobilenet_tf import export
from mobilenet_tf._keras import keras
from mobilenet_tf.heads.lraspp import data

TINY = ["--no-saved-model", "--backbone", "v1", "--alpha", "0.25", "--crop-size", "64", "--eval-height", "64",
        "--eval-width", "64", "--synthetic-train-examples", "64", "--synthetic-eval-examples", "16",
        "--global-batch-size", "8", "--verbose", "2"]


def recipe(*args, **kwargs):
    return run_script("recipes/lraspp_cityscapes.py", *args, **kwargs)


def in_process(*args):
    """The recipe's command line run in this process (refusals stop before training)."""
    return run_recipe_in_process("recipes/lraspp_cityscapes.py", *args)


# The learning run: smaller than the no-flag preset (128 px crops, 1600 scenes x 4 epochs;
# mIoU 0.942 measured): 96 px, 800 scenes x 1 epoch (measured 0.8688; 2 epochs 0.8895,
# 3 epochs 0.9065), seeded and with TensorFlow op determinism, so a commit scores the same
# every time on one machine; its mIoU clears the 0.6 bar by >= 20% of it (>= 0.72).
SIZE = 96
EPOCHS = 1
LEARN = ["--crop-size", str(SIZE), "--eval-height", str(SIZE), "--eval-width", str(SIZE),
         "--synthetic-train-examples", "800", "--synthetic-eval-examples", "100", "--epochs", str(EPOCHS),
         "--deterministic"]


@pytest.mark.slow(seconds=150)
def test_synthetic_preset_learns_and_exports_tflite(tmp_path):
    run_dir = tmp_path / "run"
    proc = recipe(*LEARN, "--no-saved-model", "--output-dir", str(run_dir), "--tflite", "fp32,int8")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["miou"] >= 0.6, metrics  # measured 0.8688
    assert metrics["pixel_accuracy"] > metrics["per_class_iou"]["background"] * 0.5
    assert set(metrics["per_class_iou"]) == set(data.synthetic_split(False, 1, 32).class_names)
    assert metrics["epochs"] == EPOCHS and metrics["backbone"] == "v3_small" and metrics["params"] > 0
    for name in ("config.json", "best.weights.h5", "history.csv", "curves.png", "predictions.png", "model.keras",
                 "model_fp32.tflite", "model_int8.tflite"):  # (saved_model/: test_recipe_imagenet.py)
        assert (run_dir / name).exists(), name
    history = (run_dir / "history.csv").read_text().splitlines()
    assert "val_miou" in history[0] and len(history) == EPOCHS + 1

    # TFLite: fp32 logits equal Keras'; int8 predicts the same class on >= 95% of pixels.
    model = keras.models.load_model(run_dir / "model.keras")
    images = np.stack([image for image, _ in data.synthetic_split(False, 8, SIZE).dataset.as_numpy_iterator()])
    images = images.astype("float32")
    keras_logits = np.asarray(model(images, training=False))
    fp32 = export.TFLiteModel(str(run_dir / "model_fp32.tflite"))(images)
    assert np.abs(fp32 - keras_logits).max() < 1e-4 * max(1.0, np.abs(keras_logits).max())
    int8 = export.TFLiteModel(str(run_dir / "model_int8.tflite"))(images)
    assert np.mean(int8.argmax(-1) == keras_logits.argmax(-1)) >= 0.95

    # --eval-only from the best checkpoint reproduces the mIoU.
    evaluated = in_process(*LEARN[:-1], "--no-saved-model", "--output-dir", str(tmp_path / "eval"), "--eval-only",
                           "--weights", str(run_dir / "best.weights.h5"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert read_metrics(tmp_path / "eval")["miou"] == pytest.approx(max(
        float(line.split(",")[history[0].split(",").index("val_miou")]) for line in history[1:]), abs=1e-4)


@pytest.mark.slow(seconds=37)
def test_mirrored_on_two_cpu_devices(tmp_path):
    proc = recipe(*TINY, "--epochs", "1", "--strategy", "mirrored", "--num-cpu-devices", "2",
                  "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["replicas"] == 2 and metrics["epochs"] == 1
    # The full-size evaluation ran inside training and again at the end, on the same weights.
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    assert float(row[header.index("val_miou")]) == pytest.approx(metrics["miou"])
    assert (tmp_path / "run" / "best.weights.h5").exists()


@pytest.mark.parametrize("args, message", [
    (["--crop-size", "100"], "multiple of --output-stride 16"),
    (["--backbone", "v5"], "unknown model name 'v5'"),
    (["--dataset", "cityscapes"], "gtFine_trainvaltest.zip"),
    (["--dataset", "folder"], "needs --num-classes"),
    (["--dataset", "folder", "--num-classes", "3", "--images-dir", "x", "--labels-dir", "y"],
     "needs --eval-height and --eval-width"),
    (["--dataset", "folder", "--num-classes", "3", "--images-dir", "nowhere", "--labels-dir", "nowhere",
      "--eval-height", "64", "--eval-width", "64"], "is not a directory"),
    (["--eval-only"], "needs --weights"),
    (["--tflite", "int4"], "`--tflite` formats"),
])
def test_bad_input_fails_before_training(args, message, tmp_path):
    proc = run_refusal("recipes/lraspp_cityscapes.py", *args, "--data-dir", str(tmp_path / "tfds"),
                       "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.slow(seconds=5)
def test_the_script_exits_2_on_bad_input_in_its_own_process(tmp_path):
    proc = recipe("--eval-only", "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "needs --weights" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
