"""RandAugment (Model Garden's policy) and per-batch mixup / cutmix (data.augment)."""

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.data import augment

OPS = {name: i for i, name in enumerate(augment.RANDAUGMENT_OPS)}


def _image(size=32, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype("float32"))


def _op(name, image, magnitude=10, sign=1.0, **kwargs):
    branches = augment.RandAugment(magnitude, **kwargs).ops(image, sign)
    return branches[OPS[name] if name != "Identity" else -1]().numpy()


def test_every_op_keeps_the_shape_and_the_pixel_range():
    image = _image()
    branches = augment.RandAugment(15).ops(image, -1.0)
    assert len(branches) == len(augment.RANDAUGMENT_OPS) + 1 == 16  # Model Garden's 16 without Cutout, + identity
    changed = 0
    for branch in branches:
        out = branch().numpy()
        assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 255
        changed += not np.array_equal(out, image.numpy())
    # Unchanged at magnitude 15: identity, Solarize (threshold 384 > 255: Model Garden's too), AutoContrast (the
    # random image spans 0-255 already).
    assert changed == 13


def test_ops_follow_model_gardens_magnitudes():
    image = _image()
    x = image.numpy()
    np.testing.assert_array_equal(_op("Invert", image), 255 - x)
    assert set(np.unique(_op("Posterize", image)) % 16) == {0}  # level 1.0: 4 bits kept
    np.testing.assert_array_equal(_op("Solarize", image, magnitude=5), np.where(x < 128, x, 255 - x))
    np.testing.assert_array_equal(_op("SolarizeAdd", image), np.where(x < 128, np.minimum(x + 110, 255), x))
    np.testing.assert_array_equal(_op("Brightness", image, magnitude=0), np.clip(0.1 * x, 0, 255))  # factor 0.1
    # TranslateX at level 1.0 moves the image translate_const pixels (sign -1: to the left), gray behind.
    moved = _op("TranslateX", image, sign=-1.0, translate_const=10)
    np.testing.assert_array_equal(moved[:, :22], x[:, 10:])
    assert (moved[:, 22:] == augment.FILL_VALUE).all()
    # Rotate at level 1.0: 30 degrees about the centre; the corners fall outside the source.
    rotated = _op("Rotate", image)
    assert (rotated[0, 0] == augment.FILL_VALUE).all() and (rotated[-1, -1] == augment.FILL_VALUE).all()
    np.testing.assert_array_equal(_op("Rotate", image, magnitude=0), x)
    # Color at factor 1.0 (magnitude 5) is the identity; at 0.1 (magnitude 0) nearly gray.
    np.testing.assert_allclose(_op("Color", image, magnitude=5), x, atol=1e-4)
    gray = _op("Color", image, magnitude=0)
    assert np.abs(gray - gray.mean(-1, keepdims=True)).max() <= 0.11 * np.abs(x - x.mean(-1, keepdims=True)).max()


def test_randaugment_is_reproducible_in_tf_data_and_changes_images():
    images = tf.stack([_image(seed=i) for i in range(16)])

    def augmented(seed):
        tf.random.set_seed(1)
        policy = augment.RandAugment(9, prob_to_apply=0.5, seed=seed)
        return np.stack(list(tf.data.Dataset.from_tensor_slices(images).map(policy).as_numpy_iterator()))

    a, b, c = augmented(0), augmented(0), augmented(5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    unchanged = sum(np.array_equal(out, image) for out, image in zip(a, images.numpy()))
    # Kept with p 0.5 twice, identity 1/16: about 1 - 0.53^2 = 72% of images change.
    assert 1 <= unchanged <= 10 and a.min() >= 0 and a.max() <= 255 and (a == np.round(a)).all()
    with pytest.raises(ValueError, match="`magnitude` must be a number >= 0"):
        augment.RandAugment(-1)
    with pytest.raises(ValueError, match=r"`prob_to_apply` must be in \(0, 1\]"):
        augment.RandAugment(9, prob_to_apply=0.0)


def _constant_batch(n=8, classes=8, size=16):
    """Example i: every pixel 10 * (i + 1), label i."""
    values = 10.0 * (np.arange(n) + 1)
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (n, size, size, 3)).astype("float32"))
    return images, tf.one_hot(np.arange(n), classes), values


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_labels_weigh_classes_as_the_pixels_do(kind):
    tf.random.set_seed(0)
    images, labels, values = _constant_batch()
    mix = augment.MixupCutmix(mixup_alpha=0.8 if kind == "mixup" else 0, cutmix_alpha=1.0 if kind == "cutmix" else 0)
    out_images, out_labels = (t.numpy() for t in mix(images, labels))
    np.testing.assert_allclose(out_labels.sum(1), 1, atol=1e-6)
    assert (out_labels.max(1) < 1).any()  # something was mixed
    for image, label in zip(out_images, out_labels):
        if kind == "mixup":  # every pixel: sum_c weight_c * value_c
            np.testing.assert_allclose(image, label @ values, rtol=1e-5)
        else:  # the share of the pixels from each example equals its label weight
            shares = np.array([(image[..., 0] == v).mean() for v in values])
            np.testing.assert_allclose(shares, label, atol=1e-6)


def test_mix_prob_mixes_that_share_of_batches_switching_kinds():
    tf.random.set_seed(0)
    images, labels, _ = _constant_batch()
    mix = augment.MixupCutmix(prob=0.3, seed=3)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat(200).map(mix)
    kinds = []
    for out_images, out_labels in ds.as_numpy_iterator():
        if out_labels.max() == 1 and (out_labels.max(1) == 1).all():
            kinds.append("none")
        else:  # cutmix leaves only original pixel values, mixup blends them
            kinds.append("cutmix" if np.isin(out_images, images.numpy()).all() else "mixup")
    mixed = 1 - kinds.count("none") / len(kinds)
    assert 0.2 <= mixed <= 0.4 and kinds.count("cutmix") >= 10 and kinds.count("mixup") >= 10, kinds
    with pytest.raises(ValueError, match=r"`prob` must be in \(0, 1\]"):
        augment.MixupCutmix(prob=0)
