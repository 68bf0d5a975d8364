"""Procedurally generated image classification, made on the fly (no download).

Class ``c`` is a texture (horizontal stripes, vertical stripes, checkerboard, dot
grid, concentric rings: ``c % 5``) in a hue band (``c // 5``). Every image draws
its own frequency, phase, ring centre, exact hue, brightness, contrast and pixel
noise from a seed derived from its index, so a dataset is reproducible, unbounded
and unaffected by horizontal flips and crops (no class turns into another).
"""

import math

import tensorflow as tf

from mobilenet_tf.data import without_autograph

TEXTURES = ("horizontal_stripes", "vertical_stripes", "checkerboard", "dots", "rings")


def class_names(num_classes):
    bands = math.ceil(num_classes / len(TEXTURES))
    return [f"{TEXTURES[c % len(TEXTURES)]}_hue{c // len(TEXTURES)}of{bands}" for c in range(num_classes)]


def render(label, image_size, num_classes, seed):
    """One image (image_size, image_size, 3) uint8 of class ``label``; ``seed`` shape [2]."""
    seeds = tf.random.experimental.stateless_split(seed, 8)
    uniform = lambda i, lo, hi, shape=(): tf.random.stateless_uniform(shape, seeds[i], lo, hi)
    coords = (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size
    v, u = tf.meshgrid(coords, coords, indexing="ij")
    freq = uniform(0, 2.5, 6.0)
    phase = uniform(1, 0.0, 2 * math.pi, (2,))
    wave = lambda t, p: tf.sin(2 * math.pi * freq * t + p)
    centre = uniform(2, 0.2, 0.8, (2,))
    radius = tf.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2)
    texture = label % len(TEXTURES)
    pattern = tf.switch_case(texture, [
        lambda: wave(v, phase[0]),
        lambda: wave(u, phase[0]),
        lambda: wave(u, phase[0]) * wave(v, phase[1]),
        lambda: 2.0 * tf.cast(tf.cos(2 * math.pi * freq * u + phase[0]) *
                              tf.cos(2 * math.pi * freq * v + phase[1]) > 0.5, tf.float32) - 1.0,
        lambda: wave(radius * 1.5, phase[0]),
    ])
    mask = tf.expand_dims(tf.sigmoid(4.0 * pattern), -1)
    bands = math.ceil(num_classes / len(TEXTURES))
    hue = (tf.cast(label // len(TEXTURES), tf.float32) + 0.5 + uniform(3, -0.3, 0.3)) / bands
    foreground = tf.image.hsv_to_rgb(tf.stack([hue, uniform(4, 0.6, 1.0), uniform(5, 0.7, 1.0)]))
    background = tf.image.hsv_to_rgb(tf.stack([hue, uniform(4, 0.3, 0.6), uniform(6, 0.1, 0.4)]))
    image = mask * foreground + (1 - mask) * background
    image += tf.random.stateless_normal(tf.shape(image), seeds[7], stddev=0.06)
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)


def synthetic_classification(num_examples, image_size=64, num_classes=10, seed=0):
    """``tf.data.Dataset`` of ``(image uint8 (S, S, 3), label int32)``, made on the fly.

    Labels cycle through the classes (balanced); the same ``seed`` and index give
    the same image. Use different seeds for train and eval sets.
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2 for synthetic data; got {num_classes}.")

    def make(index):
        label = tf.cast(index % num_classes, tf.int32)
        image = render(label, image_size, num_classes, tf.stack([tf.cast(seed, tf.int64), index]))
        return image, label

    return tf.data.Dataset.range(num_examples).map(without_autograph(make), num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
