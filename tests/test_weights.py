"""keras.applications -> mobilenet_tf weight transfer and the `weights=` argument."""

import textwrap

import numpy as np
import pytest

import keras
import mobilenet_tf
from mobilenet_tf import compress, weights as weights_lib
from conftest import randomize_batchnorm, run, run_legacy_keras, slow_unless_representative

FAMILIES = ["v1", "v2", "v3_large", "v3_small"]


@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
@pytest.mark.parametrize("name", slow_unless_representative(FAMILIES, ("v1", "v2", "v3_small"), seconds=3))
def test_transfer_from_random_keras_applications_gives_identical_outputs(name, include_top, images):
    keras.utils.set_random_seed(1)
    shape = (96, 96, 3)
    kwargs = dict(input_shape=shape, include_top=include_top)
    if include_top:
        kwargs["classifier_activation"] = None  # compare logits, not saturated softmax
    source = weights_lib.keras_application(name, alpha=0.75, **kwargs)
    randomize_batchnorm(source)
    ours = mobilenet_tf.build(name, alpha=0.75, **kwargs)
    copied = weights_lib.load_keras_applications_weights(ours, source)
    assert len(copied) == sum(1 for layer in source.layers if layer.weights)
    x = images(size=96, low=0, high=255) if name.startswith("v3") else images(size=96)
    expected = run(source, x)
    got = run(ours, x)
    assert np.abs(expected).max() > 1e-2  # the comparison is not between zeros
    np.testing.assert_array_less(np.abs(got - expected).max(), 1e-4)


@pytest.mark.slow(seconds=3)
def test_transfer_names_the_first_mismatching_layer():
    source = weights_lib.keras_application("v3_small", alpha=1.0, input_shape=(96, 96, 3), include_top=False)
    ours = mobilenet_tf.build("v3_small", alpha=0.75, input_shape=(96, 96, 3), include_top=False)
    with pytest.raises(ValueError, match=r"layer 'expanded_conv_3_project' has weight shapes \[\(1, 1, 96, 32\)\]"):
        weights_lib.load_keras_applications_weights(ours, source)
    with_top = mobilenet_tf.build("v3_small", input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="layer 'conv_2' of .* has no counterpart"):
        weights_lib.load_keras_applications_weights(with_top, source)


@pytest.mark.slow(seconds=4)
def test_weights_imagenet_builds_keras_model_and_transfers(monkeypatch, images):
    """The download itself needs internet; everything around it runs here."""
    calls = {}
    real = weights_lib.keras_application

    def offline(variant, **kwargs):
        calls.update(kwargs, variant=variant)
        assert kwargs.pop("weights") == "imagenet"
        model = real(variant, weights=None, **kwargs)
        randomize_batchnorm(model, seed=3)
        calls["model"] = model
        return model

    monkeypatch.setattr(weights_lib, "keras_application", offline)
    ours = mobilenet_tf.build("v2", alpha=0.5, input_shape=(160, 160, 3), weights="imagenet")
    assert calls["variant"] == "v2" and calls["input_shape"] == (160, 160, 3) and calls["alpha"] == 0.5
    x = images(size=160)
    np.testing.assert_allclose(run(ours, x), run(calls["model"], x), atol=1e-5)
    # Sizes without a published file load the 224 weights (same shapes).
    mobilenet_tf.build("v3_small", input_shape=(100, 100, 3), include_top=False, weights="imagenet")
    assert calls["input_shape"] == (224, 224, 3) and calls["include_top"] is False


def test_weights_imagenet_download_failure_is_clear(monkeypatch):
    def no_network(variant, **kwargs):
        raise OSError("URL fetch failure: no route to host")

    monkeypatch.setattr(weights_lib, "keras_application", no_network)
    with pytest.raises(RuntimeError, match="could not get keras.applications' ImageNet weights for v3_large.*internet"):
        mobilenet_tf.build("v3_large", weights="imagenet")


@pytest.mark.parametrize("name, kwargs, message", [
    ("v3_small", dict(alpha=0.5), r"alpha=0.5 \(published widths: 0.75, 1\)"),
    ("v3_small_minimalistic", dict(alpha=0.75), r"published widths: 1\)"),
    ("v1", dict(alpha=0.6), "published widths: 0.25, 0.5, 0.75, 1"),
    ("v2", dict(classes=10), "classes=10 with include_top=True"),
    ("v2", dict(input_shape=(224, 224, 1)), "1 input channels"),
    ("v3_large", dict(include_top=False, reduced_tail=True), "reduced_tail=True"),
    ("v1", dict(depth_multiplier=2), "depth_multiplier=2"),
])
def test_weights_imagenet_unpublished_variant_fails_before_download(name, kwargs, message, monkeypatch):
    monkeypatch.setattr(weights_lib, "keras_application", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(ValueError, match=message):
        mobilenet_tf.build(name, weights="imagenet", **kwargs)


@pytest.mark.slow(seconds=4)
def test_weights_file_round_trip(tmp_path, images):
    model = mobilenet_tf.build("v3_small", input_shape=(64, 64, 3), classes=3)
    randomize_batchnorm(model)
    path = tmp_path / "best.weights.h5"
    model.save_weights(path)
    loaded = mobilenet_tf.build("v3_small", input_shape=(64, 64, 3), classes=3, weights=str(path))
    x = images(size=64, low=0, high=255)
    np.testing.assert_allclose(run(loaded, x), run(model, x), atol=1e-6)


@pytest.mark.slow(seconds=4)
def test_weights_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        mobilenet_tf.build("v2", weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="must end with .weights.h5"):
        mobilenet_tf.build("v2", weights=str(tmp_path / "model.ckpt"))
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(ValueError, match="corrupt or was saved from a different architecture"):
        mobilenet_tf.build("v2", input_shape=(64, 64, 3), weights=str(corrupt))
    other = tmp_path / "other.weights.h5"
    mobilenet_tf.build("v3_small", input_shape=(64, 64, 3)).save_weights(other)
    with pytest.raises(ValueError, match="corrupt or was saved from a different architecture"):
        mobilenet_tf.build("v2", input_shape=(64, 64, 3), weights=str(other))
    with pytest.raises(ValueError, match="`weights` must be None, 'imagenet' or a path"):
        mobilenet_tf.build("v2", weights=3)


TF_KERAS_ROUND_TRIP = textwrap.dedent("""
    import json
    import numpy as np
    import mobilenet_tf
    from mobilenet_tf import compress, weights
    model = mobilenet_tf.build("v3_small", alpha=0.5, input_shape=(32, 32, 3), classes=5)
    loaded = weights.load_by_name(model, {keras3_file!r})
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    before = model(x, training=False).numpy()
    clustered = compress.strip(compress.cluster(model, 8))   # a TFMOT result to send back
    weights.save_by_name(clustered, {tf_keras_file!r})
    print("RESULT" + json.dumps({{"loaded": len(loaded), "outputs": before.tolist(),
                                 "clustered": clustered(x, training=False).numpy().tolist()}}))
""")


@pytest.mark.slow(seconds=14)
def test_weights_move_between_keras_3_and_tf_keras_by_name(tmp_path):
    model = mobilenet_tf.build("v3_small", alpha=0.5, input_shape=(32, 32, 3), classes=5)
    randomize_batchnorm(model)
    keras3_file = weights_lib.save_by_name(model, str(tmp_path / "keras3.npz"))
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    result = run_legacy_keras(TF_KERAS_ROUND_TRIP.format(keras3_file=keras3_file,
                                                         tf_keras_file=str(tmp_path / "tf_keras.npz")))
    # tf_keras rebuilt the model with the same builder and computes the same function.
    assert result["loaded"] == len([layer for layer in model.layers if layer.weights])
    np.testing.assert_allclose(result["outputs"], model(x, training=False).numpy(), atol=1e-5)
    # TFMOT's clustered weights come back into a Keras 3 model.
    back = mobilenet_tf.build("v3_small", alpha=0.5, input_shape=(32, 32, 3), classes=5)
    weights_lib.load_by_name(back, str(tmp_path / "tf_keras.npz"))
    np.testing.assert_allclose(back(x, training=False).numpy(), result["clustered"], atol=1e-5)
    assert max(compress.unique_values(back).values()) <= 8


def test_load_by_name_refuses_mismatches(tmp_path):
    model = mobilenet_tf.build("v1", alpha=0.25, input_shape=(32, 32, 3), classes=3)
    path = weights_lib.save_by_name(model, str(tmp_path / "v1.npz"))
    with pytest.raises(ValueError, match="weight shapes"):
        weights_lib.load_by_name(mobilenet_tf.build("v1", alpha=0.5, input_shape=(32, 32, 3), classes=3), path)
    with pytest.raises(ValueError, match="no \\(or other\\) weights for layer"):
        weights_lib.load_by_name(mobilenet_tf.build("v2", alpha=0.35, input_shape=(32, 32, 3), classes=3), path)
    with pytest.raises(ValueError, match="does not exist"):
        weights_lib.load_by_name(model, str(tmp_path / "missing.npz"))
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read weights file"):
        weights_lib.load_by_name(model, str(tmp_path / "corrupt.npz"))
    with pytest.raises(ValueError, match="must end with '.npz'"):
        weights_lib.save_by_name(model, str(tmp_path / "v1.h5"))
