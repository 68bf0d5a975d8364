"""The evaluators moved out of the recipe scripts, tested in-process on tiny data:
LR-ASPP's full-size Evaluator, SSDLite's COCOEvaluator, the TFLite classifier
evaluation, and FaceNet's teacher (its checks and its cached embeddings)."""

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import evaluation, export
from mobilenet_tf._keras import keras
from mobilenet_tf.heads import ssdlite
from mobilenet_tf.heads.facenet import data as face_data, model as face_model, teacher as teacher_lib
from mobilenet_tf.heads.segmentation import evaluation as seg_evaluation
from mobilenet_tf.heads.ssdlite import data as det_data, evaluation as det_evaluation


def _segmenter(size, num_classes=3):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(inputs))


def test_lraspp_evaluator_copies_weights_to_the_evaluation_size_and_keeps_the_last_matrix():
    labels = np.ones((4, 16, 16, 1), np.int32)
    labels[:, :2] = 255  # ignored pixels
    val_ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 16, 16, 3), np.float32), labels)).batch(2)
    trained = _segmenter(8)  # the training crop; the evaluation model is larger
    kernel, bias = trained.get_weights()
    trained.set_weights([kernel * 0, np.float32([0, 5, 0])])  # always class 1
    evaluator = seg_evaluation.Evaluator(_segmenter(16), num_classes=3, val_ds=val_ds)
    assert evaluator(trained) == {"miou": 1.0, "pixel_accuracy": 1.0}
    matrix = evaluator.last_matrix
    assert matrix[1, 1] == 4 * 14 * 16 and matrix.sum() == matrix[1, 1]
    trained.set_weights([kernel * 0, np.float32([5, 0, 0])])
    assert evaluator.final_matrix(trained) is matrix  # reused: training evaluated its last epoch
    evaluator.last_matrix = None
    assert evaluator.final_matrix(trained)[1, 0] == 4 * 14 * 16  # --eval-only: evaluated now


@pytest.mark.slow(seconds=15)
def test_coco_evaluator_gathers_ground_truth_once_and_reports_map():
    split = det_data.synthetic_split(False, 6, 96, num_classes=3, seed=0)
    eval_ds = det_data.make_eval_pipeline(split, input_size=96, batch_size=4)
    evaluator = det_evaluation.COCOEvaluator(split, eval_ds, "sigmoid")
    assert len(evaluator.ground_truth["images"]) == 6 and evaluator.dropped_boxes == 0
    model = ssdlite.build_ssdlite("v3_small", num_classes=3, input_size=96, alpha=0.35)
    results = evaluator(model)
    assert set(results) == {"map", "map50", "map75"}
    assert all(np.isnan(v) or 0.0 <= v <= 1.0 for v in results.values())
    last = evaluator.last
    assert isinstance(last[1], list) and evaluator.final(model) is last
    assert evaluator.detector(model) is evaluator.detector(model)  # traced once per model


def test_evaluate_tflite_reports_top1_agreement_and_bytes(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    one_hot = tf.one_hot(np.argmax(model(x), -1), 3)  # labels = the model's own predictions
    val_ds = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(8)
    path = export.to_tflite(model, str(tmp_path / "m.tflite"), "fp32")
    results = evaluation.evaluate_tflite({"fp32": path}, model, val_ds, steps=3, batch_size=5)
    assert results["fp32"]["top1"] == 1.0 and results["fp32"]["agreement"] == 1.0
    assert results["fp32"]["bytes"] == (tmp_path / "m.tflite").stat().st_size


@pytest.mark.slow(seconds=7)
def test_teacher_checks_and_embedding_cache(tmp_path, monkeypatch):
    assert teacher_lib.load_teacher(None, 16) is None
    teacher = face_model.build_embedding_model("v1", 0.25, 32, 16, 0.0)
    teacher.save(tmp_path / "teacher.keras")
    with pytest.raises(ValueError, match="embeds into 16 dimensions but the student into 8"):
        teacher_lib.load_teacher(str(tmp_path / "teacher.keras"), 8)
    assert teacher_lib.load_teacher(str(tmp_path / "teacher.keras"), 16).name == teacher.name
    train = face_data.synthetic_split(4, 2, 32, training=True, seed=0)
    run = str(tmp_path)
    first = teacher_lib.teacher_embeddings(teacher, train, run, batch_size=4)
    assert first.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "teacher_embeddings.npy").exists() and (tmp_path / "teacher_fingerprint.json").exists()
    calls = []
    monkeypatch.setattr(teacher_lib.verification, "embed", lambda *a: calls.append(1) or np.ones((8, 16)))
    np.testing.assert_array_equal(teacher_lib.teacher_embeddings(teacher, train, run), first)  # the cache
    assert not calls
    other = face_model.build_embedding_model("v1", 0.25, 32, 16, 0.0)  # another teacher: recomputed
    teacher_lib.teacher_embeddings(other, train, run, write=False)
    assert calls == [1]


@pytest.mark.slow(seconds=10)
def test_moved_evaluators_stay_below_training():
    """Like every head and deployment module, the evaluators never import the training package."""
    import subprocess
    import sys

    modules = ["mobilenet_tf.evaluation", "mobilenet_tf.heads.segmentation.evaluation",
               "mobilenet_tf.heads.ssdlite.evaluation", "mobilenet_tf.heads.facenet.teacher"]
    script = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
              + "print(sorted(m for m in sys.modules if m.startswith('mobilenet_tf.training')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
