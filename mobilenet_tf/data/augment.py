"""Classification training augmentation beyond crop and flip: RandAugment (per image)
and mixup / cutmix (per batch), as TF Model Garden applies them in the MobileNetV4
configs (``official/vision/ops/augment.py``; ``training.schedules`` holds each
config's values).

Keras ships ``keras.layers.RandAugment``, but its policy is not Model Garden's (11 ops
whose strength is a uniform draw up to ``factor``, e.g. rotations up to
``factor * 360`` degrees, every op computed for every image); the configs' magnitudes
(9 and 15 on Model Garden's 0-10 scale) only mean something in Model Garden's policy,
so ``RandAugment`` below reproduces it: 15 ops at a fixed magnitude with a random
sign, one op per layer drawn uniformly among the ops plus an identity, each layer's
result kept with ``prob_to_apply``. Only the op drawn is computed (``tf.switch_case``).
Histogram equalisation and auto-contrast are Keras's layers. Mixup is Keras's
``MixUp`` layer, cutmix ``cutmix`` below; ``MixupCutmix`` switches them per batch as
Model Garden does.

Images are float32 in [0, 255], (S, S, 3) for ``RandAugment``, (B, S, S, 3) with
(B, classes) soft labels for ``MixupCutmix``.
"""

import math

import tensorflow as tf

from mobilenet_tf._keras import keras

FILL_VALUE = 128.0  # gray, the fill of Model Garden's geometric ops
MAX_LEVEL = 10.0  # Model Garden's magnitude scale; its V4 configs use 9 and 15 (not clipped)
# Model Garden's ops in its order, without "Cutout" (every MobileNetV4 config excludes it).
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "SolarizeAdd")


def _grayscale(image):
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _blend(degenerate, image, factor):
    """Model Garden's ``blend``: ``degenerate + factor * (image - degenerate)``, clipped."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _smoothed(image):
    """PIL's SMOOTH filter (Model Garden's sharpness degenerate); the border keeps its pixels."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    mask = tf.pad(tf.ones_like(inner), [[1, 1], [1, 1], [0, 0]])
    return mask * tf.pad(tf.round(inner), [[1, 1], [1, 1], [0, 0]]) + (1.0 - mask) * image


def _affine(image, transform):
    """Warp by the 8-vector projective ``transform`` (output -> input coordinates),
    nearest neighbour, gray fill."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=tf.shape(image)[:2], fill_value=FILL_VALUE, interpolation="NEAREST",
        fill_mode="CONSTANT")[0]


def _rotation(degrees, height, width):
    """The projective transform that rotates by ``degrees`` about the image centre."""
    angle = degrees * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    w, h = tf.cast(width - 1, tf.float32), tf.cast(height - 1, tf.float32)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


class RandAugment:
    """Model Garden's RandAugment on one float32 [0, 255] (H, W, 3) image.

    Args:
        magnitude: strength on Model Garden's 0-10 scale (not clipped: the
            MobileNetV4 configs use 9 and 15).
        num_layers: ops applied one after another.
        prob_to_apply: probability that each layer's op is kept (None: always).
        translate_const: translation in pixels at magnitude 10.
        seed: op seed (with the global seed: reproducible under op determinism).

    At magnitude m (level l = m / 10): Rotate +-30*l degrees, ShearX/Y +-0.3*l,
    TranslateX/Y +-translate_const*l pixels, Color / Contrast / Brightness /
    Sharpness blend with factor 1.8*l + 0.1, Posterize to int(4*l) bits,
    Solarize above int(256*l), SolarizeAdd int(110*l) below 128; AutoContrast,
    Equalize and Invert take no magnitude.
    """

    def __init__(self, magnitude, num_layers=2, prob_to_apply=None, translate_const=10, seed=0):
        if not isinstance(magnitude, (int, float)) or isinstance(magnitude, bool) or magnitude < 0:
            raise ValueError(f"`magnitude` must be a number >= 0 (Model Garden's scale 0-10); got {magnitude!r}.")
        if prob_to_apply is not None and not 0 < prob_to_apply <= 1:
            raise ValueError(f"`prob_to_apply` must be in (0, 1] or None; got {prob_to_apply!r}.")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"`num_layers` must be an int >= 1; got {num_layers!r}.")
        self.magnitude, self.num_layers, self.prob_to_apply = float(magnitude), num_layers, prob_to_apply
        self.translate_const, self.seed = float(translate_const), seed
        self.auto_contrast = keras.layers.AutoContrast(value_range=(0, 255))
        self.equalize = keras.layers.Equalization(value_range=(0, 255))

    def ops(self, image, sign):
        """The branches of ``tf.switch_case``, in ``RANDAUGMENT_OPS`` order, then identity;
        ``sign`` (+-1) is the random sign of the signed magnitudes."""
        level = self.magnitude / MAX_LEVEL
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        factor = level * 1.8 + 0.1
        shear, shift = sign * level * 0.3, sign * level * self.translate_const
        bits = max(0, min(8, int(level * 4)))
        threshold, addition = float(int(level * 256)), float(int(level * 110))

        def posterize():
            step = 2.0 ** (8 - bits)
            return tf.floor(image / step) * step

        def contrast():
            return _blend(tf.fill(tf.shape(image), tf.reduce_mean(tf.image.rgb_to_grayscale(image))), image, factor)

        return [
            lambda: self.auto_contrast(image),
            lambda: self.equalize(image),
            lambda: 255.0 - image,
            lambda: _affine(image, _rotation(sign * level * 30.0, height, width)),
            posterize,
            lambda: tf.where(image < threshold, image, 255.0 - image),
            lambda: _blend(_grayscale(image), image, factor),
            contrast,
            lambda: _blend(tf.zeros_like(image), image, factor),
            lambda: _blend(_smoothed(image), image, factor),
            lambda: _affine(image, tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])),
            lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])),
            lambda: _affine(image, tf.stack([1.0, 0.0, -shift, 0.0, 1.0, 0.0, 0.0, 0.0])),
            lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -shift, 0.0, 0.0])),
            lambda: tf.where(image < 128.0, tf.minimum(image + addition, 255.0), image),
            lambda: image,
        ]

    def __call__(self, image):
        image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, 3])
        image = tf.round(tf.clip_by_value(image, 0.0, 255.0))  # Model Garden works on uint8
        for i in range(self.num_layers):
            seed = self.seed + 10 * i
            index = tf.random.uniform([], 0, len(RANDAUGMENT_OPS) + 1, tf.int32, seed=seed)
            sign = tf.where(tf.random.uniform([], seed=seed + 1) < 0.5, -1.0, 1.0)
            augmented = tf.round(tf.switch_case(index, self.ops(image, sign)))
            augmented.set_shape(image.shape)
            if self.prob_to_apply is not None:
                keep = tf.random.uniform([], seed=seed + 2) < self.prob_to_apply
                augmented = tf.where(keep, augmented, image)
            image = augmented
        return image


def _beta(shape, alpha, seed):
    """Beta(alpha, alpha) draws, as the ratio of two Gamma(alpha) draws."""
    a = tf.random.gamma(shape, alpha, seed=seed)
    b = tf.random.gamma(shape, alpha, seed=seed + 1)
    return a / tf.maximum(a + b, 1e-12)


def cutmix(images, labels, alpha, seed=0):
    """CutMix (Yun et al. 2019) on a batch: each example gets a box of a random partner
    pasted in, side ``sqrt(1 - lam)`` of the image's for lam ~ Beta(alpha, alpha) at a
    uniform centre, clipped at the border (Model Garden's geometry); its label weighs
    the partner's by the share of pixels pasted. (Keras's ``CutMix`` draws alpha itself
    and weighs labels by the unclipped box's area, not the pixels pasted.)"""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side = tf.sqrt(1.0 - _beta([batch], alpha, seed))

    def span(length, seed):  # per example: [start, end) of the box along one axis
        half = tf.cast(side * tf.cast(length, tf.float32), tf.int32) // 2
        centre = tf.random.uniform([batch], 0, length, tf.int32, seed=seed)
        return tf.maximum(centre - half, 0)[:, None], tf.minimum(centre + half, length)[:, None]

    (top, bottom), (left, right) = span(height, seed + 2), span(width, seed + 3)
    rows, cols = tf.range(height)[None], tf.range(width)[None]
    in_rows = tf.cast((rows >= top) & (rows < bottom), images.dtype)  # (B, H)
    in_cols = tf.cast((cols >= left) & (cols < right), images.dtype)  # (B, W)
    mask = in_rows[:, :, None, None] * in_cols[:, None, :, None]  # (B, H, W, 1)
    partner = tf.random.shuffle(tf.range(batch), seed=seed + 4)
    images = mask * tf.gather(images, partner) + (1.0 - mask) * images
    pasted = tf.cast(tf.reduce_mean(mask, axis=[1, 2, 3]), labels.dtype)[:, None]
    return images, (1.0 - pasted) * labels + pasted * tf.gather(labels, partner)


class MixupCutmix:
    """Model Garden's per-batch mixup / cutmix on (images (B, H, W, 3), soft labels (B, C)).

    With probability ``prob`` a batch is mixed, else returned as is; a mixed batch
    gets cutmix (``cutmix``) with probability ``switch_prob``, else mixup (Keras's
    ``MixUp``): the whole batch one or the other. The mixing weight is drawn per
    example from Beta(alpha, alpha) and the partner is a random permutation of the
    batch (Model Garden pairs with the reversed batch and, before its 2025 fix, drew
    the weight uniformly whatever the alpha). Labels mix with the pixels' weights, so
    label smoothing can stay in the loss: smoothing commutes with mixing.
    """

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, seed=0):
        if not 0 < prob <= 1:
            raise ValueError(f"`prob` must be in (0, 1]; got {prob!r}.")
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("`mixup_alpha` or `cutmix_alpha` must be > 0.")
        self.prob, self.cutmix_alpha, self.seed = prob, cutmix_alpha, seed
        # Model Garden's rule: with one alpha at 0, only the other kind runs.
        self.switch_prob = 1.0 if mixup_alpha <= 0 else 0.0 if cutmix_alpha <= 0 else switch_prob
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed) if mixup_alpha > 0 else None

    def _mixup(self, images, labels):
        out = self.mixup({"images": images, "labels": tf.cast(labels, tf.float32)}, training=True)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)

    def __call__(self, images, labels):
        def mixed():
            if self.switch_prob in (0.0, 1.0):
                return cutmix(images, labels, self.cutmix_alpha, self.seed) if self.switch_prob \
                    else self._mixup(images, labels)
            return tf.cond(tf.random.uniform([], seed=self.seed + 5) < self.switch_prob,
                           lambda: cutmix(images, labels, self.cutmix_alpha, self.seed),
                           lambda: self._mixup(images, labels))

        if self.prob >= 1:
            return mixed()
        return tf.cond(tf.random.uniform([], seed=self.seed + 6) < self.prob, mixed, lambda: (images, labels))
