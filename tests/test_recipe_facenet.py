"""`python recipes/facenet_distill.py` end to end: the synthetic default learns, eval-only,
a given teacher, folder + LFW data with the official pairs file, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import read_metrics, run_recipe_in_process, run_script
from mobilenet_tf import export
from mobilenet_tf._keras import keras
from mobilenet_tf.data import identities
from mobilenet_tf.heads import facenet
from mobilenet_tf.heads.facenet import data

TINY = ["--no-saved-model", "--input-size", "32", "--alpha", "0.25", "--teacher-alpha", "0.25", "--epochs", "1",
        "--teacher-epochs", "1", "--steps-per-epoch", "2", "--identities-per-batch", "4", "--images-per-identity", "2",
        "--verbose", "2"]


def recipe(*args, **kwargs):
    return run_script("recipes/facenet_distill.py", *args, **kwargs)


def in_process(*args):
    """The recipe's command line run in this process (refusals stop before training)."""
    return run_recipe_in_process("recipes/facenet_distill.py", *args)


# The learning run: smaller than the no-flag preset (teacher and student at 64 px, 8 + 8
# epochs; measured teacher 0.936 / student 0.911 / student AUC 0.968 after 6 + 6), seeded
# and with TensorFlow op determinism, so a commit scores the same every time on one
# machine: faces at 48 px, a width-0.75 teacher (2.2x the student's MAdds) for 5 epochs
# at lr 4e-3, the student for 5 at 6e-3, evaluation after the last epoch only. Bars above
# 0.8 keep a margin of 20% of the error they allow (accuracy >= 0.85: measured >= 0.88;
# AUC > 0.92: measured >= 0.936; the teacher gap <= 0.05: measured <= 0.04). Measured:
# student 0.8960 / teacher 0.9015 / student AUC 0.9560 / VAL@FAR=1e-3 0.119 (the width-1.0
# teacher, 3.8x the student's MAdds and a third slower to train: 0.8985 / 0.9223 / 0.9553 /
# 0.043). Tried (the student at 64 px unless said): 5 epochs at 4e-3 0.910; 4 at 6e-3
# 0.905; 3 at 8e-3 0.874; at 48 px 4 epochs at 6e-3 0.911; a teacher of 4 epochs at 6e-3
# (0.925) gave 0.879; teacher at 40 px with the student at 56: 0.851; a width-0.5 teacher
# at 64 px 0.885; a width-0.25 student under it 0.862.
LEARN = ["--input-size", "48", "--epochs", "5", "--teacher-epochs", "5", "--eval-every", "5",
         "--learning-rate", "6e-3", "--teacher-learning-rate", "4e-3", "--teacher-alpha", "0.75", "--deterministic"]


@pytest.mark.slow(seconds=390)
def test_synthetic_preset_distils_a_student_close_to_its_teacher(tmp_path):
    run_dir = tmp_path / "run"
    proc = in_process(*LEARN, "--no-saved-model", "--output-dir", str(run_dir), "--tflite", "fp32", "--verbose", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    # Without lr warmup the teacher's triplet loss sometimes sat on its plateau for two
    # epochs (seed 1: teacher 0.8755, student AUC 0.9186; seed 0 on an AMD EPYC CI
    # machine: teacher 0.8685, student AUC 0.910, VAL 0.011). With the synthetic preset's
    # 1-epoch warmup and the width-1.0 teacher, measured (student / teacher / student AUC /
    # VAL@FAR=1e-3): seed 0 (this test's) 0.8985 / 0.9223 / 0.9553 / 0.043 (on another
    # machine 0.8923 / 0.9078 / 0.9489 / 0.048, in the test's process as in a fresh one), seed 1
    # 0.8943 / 0.8975 / 0.9525 / 0.026, seed 2 0.8957 / 0.9072 / 0.9488 / 0.054. An
    # untrained model scores VAL about 0.001 and AUC about 0.5.
    assert metrics["student_accuracy"] >= 0.85, metrics
    assert metrics["student_accuracy"] >= metrics["teacher_accuracy"] - 0.05, metrics
    assert metrics["student_val_at_far_1e-3"] > 0.02 and metrics["student_auc"] > 0.92
    assert metrics["num_pairs"] == 6000 and metrics["num_folds"] == 10
    assert metrics["teacher_madds"] > 2 * metrics["student_madds"] > 0 and metrics["student_params"] > 0
    for name in ("config.json", "teacher/teacher.keras", "teacher/history.csv", "teacher_embeddings.npy",
                 "best.weights.h5", "history.csv", "roc.png", "curves.png", "model.keras",
                 "student_fp32.tflite"):  # (saved_model/: test_recipe_imagenet.py)
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists() and not (run_dir / "teacher" / "backup").exists()
    assert "val_accuracy" in (run_dir / "history.csv").read_text().splitlines()[0]

    # The saved student and its TFLite file give the same unit embeddings.
    student = keras.models.load_model(run_dir / "model.keras")
    faces = data.synthetic_split(3, 2, 48, training=False).sources.astype("float32")
    keras_out = student(faces, training=False).numpy()
    np.testing.assert_allclose(np.linalg.norm(keras_out, axis=1), 1.0, atol=1e-5)
    assert np.abs(export.TFLiteModel(str(run_dir / "student_fp32.tflite"))(faces) - keras_out).max() < 1e-5

    # --eval-only on the last weights reproduces the student's accuracy.
    evaluated = in_process(*LEARN[:-1], "--no-saved-model", "--output-dir", str(tmp_path / "eval"), "--eval-only",
                           "--weights", str(run_dir / "last.weights.h5"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert read_metrics(tmp_path / "eval")["student_accuracy"] == pytest.approx(metrics["student_accuracy"])


def _identity_folders(root, identities, images, size=40, seed=0, lfw_names=False):
    """Synthetic identities written as JPEG files, one subfolder per identity."""
    split = data.synthetic_split(identities, images, size, training=not lfw_names, seed=seed)
    for index, (image, label) in enumerate(zip(split.sources, split.labels)):
        name = f"Person_{label:03d}"
        number = index % images + 1
        path = root / name / (f"{name}_{number:04d}.jpg" if lfw_names else f"{number}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, "JPEG")
    return root


@pytest.mark.slow(seconds=12)
def test_folder_training_with_lfw_folder_and_official_pairs_and_a_given_teacher(tmp_path):
    train_dir = _identity_folders(tmp_path / "train", 8, 4)
    (train_dir / "Person_999").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(train_dir / "Person_999" / "1.jpg")  # too few images
    lfw_dir = _identity_folders(tmp_path / "lfw", 20, 2, lfw_names=True)
    lines = ["10\t1"]
    for fold in range(10):
        a, b = f"Person_{2 * fold:03d}", f"Person_{2 * fold + 1:03d}"
        lines += [f"{a}\t1\t2", f"{a}\t1\t{b}\t2"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    teacher = facenet.build_embedding_model("v1", alpha=0.25, input_size=48, embedding_dim=16)
    teacher.save(tmp_path / "teacher.keras")

    run_dir = tmp_path / "run"
    proc = in_process(*TINY, "--train-dir", str(train_dir), "--lfw-dir", str(lfw_dir), "--pairs-file",
                      str(tmp_path / "pairs.txt"), "--teacher", str(tmp_path / "teacher.keras"), "--embedding-dim",
                      "16", "--triplet-weight", "0.5", "--output-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["num_pairs"] == 20 and metrics["num_folds"] == 10 and metrics["eval_identities"] == 20
    assert metrics["train_identities"] == 8 and metrics["skipped"]["identities_with_fewer_than_2_images"] == 1
    assert metrics["teacher_name"] == teacher.name and 0 <= metrics["student_accuracy"] <= 1
    assert not (run_dir / "teacher").exists()  # a given teacher is not retrained
    assert np.load(run_dir / "teacher_embeddings.npy").shape == (32, 16)
    assert json.loads((run_dir / "teacher_fingerprint.json").read_text())["name"] == teacher.name
    assert json.loads((run_dir / "config.json").read_text())["triplet_weight"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["--train-dir", "{tmp}/missing"], "--train-dir"),
    (["--train-dir", "{tmp}"], "--data-dir (TFDS lfw), --lfw-dir"),
    (["--teacher", "{tmp}/teacher.keras"], "embeds into 16 dimensions but the student into 128"),
    (["--images-per-identity", "5"], "'train_identity_00000' has only 4 images"),  # the preset renders 4
    (["--eval-only"], "--eval-only` needs --weights"),
    (["--mining", "semi_hard", "--distill-weight", "0", "--triplet-weight", "0"], "not both 0"),
    (["--strategy", "mirrored", "--num-cpu-devices", "2", "--identities-per-batch", "3"], "whole identities"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, args, message):
    """Refused before the run directory is made and before any identity is rendered
    (the teacher file and the synthetic preset's P x K are checked first)."""
    if "--teacher" in args:
        facenet.build_embedding_model("v1", alpha=0.25, input_size=32, embedding_dim=16).save(
            tmp_path / "teacher.keras")

    def no_rendering(*_, **__):
        raise AssertionError("faces were rendered before the refusal")

    monkeypatch.setattr(identities, "synthetic_identities", no_rendering)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_recipe_in_process("recipes/facenet_distill.py", *args, "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.slow(seconds=50)
def test_mirrored_on_two_cpu_devices_and_resume_keeps_the_teacher(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--synthetic-train-identities", "20", "--synthetic-eval-identities", "20",
            "--synthetic-images-per-identity", "4", "--strategy", "mirrored", "--num-cpu-devices", "2",
            "--output-dir", str(run_dir)]
    proc = in_process(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["replicas"] == 2 and metrics["epochs"] == 1 and metrics["num_pairs"] > 0
    teacher_time = (run_dir / "teacher" / "teacher.keras").stat().st_mtime
    # A rerun of an unfinished run (metrics.json gone) reuses the finished teacher (a resume
    # may change the strategy: this one runs on the default strategy, one device).
    (run_dir / "metrics.json").unlink()
    again = in_process(*args[:args.index("--strategy")], "--output-dir", str(run_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "teacher" / "teacher.keras").stat().st_mtime == teacher_time
    assert read_metrics(run_dir)["replicas"] == 1
