"""TFLite export: the int8 fast path of V3, the interpreters, trained-like BN statistics."""

import numpy as np
import pytest

import mobilenet_tf
from mobilenet_tf import benchmark, export


def _images(count, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def test_batchnorm_from_data_makes_inference_match_the_batch_statistics():
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(64, 64, 3), include_top=False)
    images = _images(8, 64)
    before = np.asarray(model(images, training=False))
    benchmark.batchnorm_from_data(model, images)
    after = np.asarray(model(images, training=False))
    np.testing.assert_allclose(after, np.asarray(model(images, training=True)), rtol=1e-3, atol=1e-3)
    # Random initialisation shrinks activations; data statistics restore their scale.
    assert np.std(after) > 10 * np.std(before)
    assert all(layer.momentum == 0.99 for layer in model.layers if type(layer).__name__ == "BatchNormalization")


def test_int8_v3_runs_entirely_on_xnnpack(tmp_path):
    """h-swish as (x / 6) * ReLU6(x + 3): no HARD_SWISH op, which XNNPACK has no int8
    kernel for, so the int8 graph is split into no more partitions than fp32's."""
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(96, 96, 3))
    images = _images(8, 96)
    benchmark.batchnorm_from_data(model, images)
    fp32 = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "fp32.tflite")), threads=2)
    int8 = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "int8.tflite"), "int8", images[:, None]),
                              threads=2)
    int8_ops = int8.op_counts()
    assert "HARD_SWISH" not in int8_ops and int8_ops["MUL"] >= 19
    assert int8_ops["DELEGATE"] == fp32.op_counts()["DELEGATE"] <= 2
    np.testing.assert_allclose(fp32(images[:2]), np.asarray(model(images[:2])), atol=1e-5)


def test_litert_and_tensorflow_interpreters_agree(tmp_path):
    model = mobilenet_tf.build("v2", alpha=0.35, input_shape=(64, 64, 3), classes=5, classifier_activation=None)
    path = export.to_tflite(model, str(tmp_path / "m.tflite"))
    x = _images(3, 64)
    litert, tensorflow = export.TFLiteModel(path, 2, "litert"), export.TFLiteModel(path, 2, "tensorflow")
    assert export.default_runtime() == "litert" == litert.runtime  # ai-edge-litert is a test dependency
    np.testing.assert_allclose(litert(x), tensorflow(x), atol=1e-6)
    np.testing.assert_allclose(litert(x), np.asarray(model(x)), atol=1e-4)
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        export.TFLiteModel(path, runtime="onnx")
