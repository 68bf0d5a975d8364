"""FaceNet embeddings are unit vectors at any scale (even untrained), and the Gallery's
cosine is computed from the vectors, whatever their norm."""

import numpy as np
import pytest

from mobilenet_tf import export
from mobilenet_tf._keras import keras
from mobilenet_tf.heads import facenet
from mobilenet_tf.heads.facenet.model import L2Normalization


@pytest.fixture(scope="module")
def untrained():
    # An untrained V1's pooled features are ~0 (BatchNormalization's initial statistics):
    # its embeddings have norm ~1e-8, where UnitNormalization's epsilon gave outputs of norm ~1e-4.
    return facenet.build_embedding_model("v1", alpha=0.25, input_size=32, embedding_dim=16)


def test_untrained_embeddings_are_unit_vectors(untrained):
    rng = np.random.default_rng(0)
    inputs = np.concatenate([rng.uniform(0, 255, (4, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                             np.full((1, 32, 32, 3), 1e-6)]).astype("float32")
    raw = keras.Model(untrained.input, untrained.get_layer(facenet.model.EMBEDDING_LAYER).output)
    assert np.linalg.norm(raw(inputs, training=False).numpy(), axis=1).max() < 1e-3  # what gets normalised
    norms = np.linalg.norm(untrained(inputs, training=False).numpy(), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e-4, 1.0, 1e6, 1e30])
def test_l2_normalization_at_any_scale(scale):
    vectors = np.random.default_rng(1).normal(size=(3, 8)) * scale
    out = L2Normalization()(vectors.astype("float32")).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.all(L2Normalization()(np.zeros((1, 8), "float32")).numpy() == 0)  # no NaN for a zero vector


@pytest.mark.slow(seconds=9)
def test_embedding_model_saves_loads_and_converts(untrained, tmp_path):
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = untrained(x, training=False).numpy()
    untrained.save(tmp_path / "face.keras")
    restored = keras.models.load_model(tmp_path / "face.keras")
    assert isinstance(restored.get_layer("l2_normalize"), L2Normalization)
    np.testing.assert_allclose(restored(x, training=False).numpy(), expected, atol=1e-6)
    lite = export.TFLiteModel(export.to_tflite(untrained, str(tmp_path / "face.tflite")))(x)
    np.testing.assert_allclose(np.linalg.norm(lite, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(lite, expected, atol=1e-4)


def test_gallery_cosine_is_computed_from_non_unit_vectors(tmp_path):
    enrolled = np.array([[3.0, 0.0, 0.0], [0.0, 0.002, 0.0], [1e-20, 1e-20, 0.0]])
    probe = np.array([[10.0, 10.0, 0.0]])  # 45 degrees from the first two, parallel to the third
    gallery = facenet.Gallery().add(["x", "y", "z"], enrolled)
    top = dict(gallery.query(probe, k=3)[0])
    expected = (enrolled @ probe[0]) / (np.linalg.norm(enrolled, axis=1) * np.linalg.norm(probe[0]))
    assert top == pytest.approx(dict(zip("xyz", expected)), abs=1e-6)
    assert top["z"] == pytest.approx(1.0, abs=1e-6) and top["x"] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert gallery.identify(probe, threshold=0.9) == ["z"]
    assert gallery.identify(probe * 1e-6, threshold=0.9) == ["z"]  # a probe's norm does not matter
    # An .npz written with non-unit vectors loads as the same cosines.
    np.savez(tmp_path / "raw.npz", names=np.array(["x", "y", "z"]), embeddings=enrolled.astype("float32"))
    assert dict(facenet.Gallery.load(tmp_path / "raw.npz").query(probe, k=3)[0]) == pytest.approx(top, abs=1e-6)
