"""Procedurally generated scenes of coloured shapes with per-pixel labels (no download).

Label 0 is the background; object class ``k`` (1..K) is a shape (disc, square,
triangle: ``(k - 1) % 3``) in its own hue band. Every scene draws 1-4 objects
(detection: 1-6) with random size (radius 12-30% of the image; detection 6-25%),
position (objects may be cut by the border and overlap; later ones occlude
earlier ones), exact hue, saturation,
brightness and stripe texture, on a low-saturation textured background, plus
pixel noise. All from a seed derived from the example's index: reproducible,
unbounded, rendered inside ``tf.data``.
"""

import math

import tensorflow as tf

from mobilenet_tf.data import without_autograph

SHAPES = ("disc", "square", "triangle")
MAX_OBJECTS = 4


def class_names(num_classes):
    """``["background", "disc_hue0", ...]`` for ``num_classes`` (background included)."""
    return ["background"] + [f"{SHAPES[(k - 1) % len(SHAPES)]}_hue{k - 1}" for k in range(1, num_classes)]


def render_scene(image_size, num_classes, seed, max_objects=MAX_OBJECTS, radius_range=(0.12, 0.30)):
    """One scene as a dict: "image" uint8 (S, S, 3), "label" uint8 (S, S, 1) in
    [0, num_classes), and per object slot (``max_objects``) "boxes" float32 (4,)
    normalised [ymin, xmin, ymax, xmax] around its visible pixels, "classes" int32,
    "valid" bool (False for unused slots and fully occluded objects)."""
    seeds = tf.random.experimental.stateless_split(seed, 12)
    uniform = lambda i, shape=(), lo=0.0, hi=1.0: tf.random.stateless_uniform(shape, seeds[i], lo, hi)
    coords = (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size
    v, u = tf.meshgrid(coords, coords, indexing="ij")

    # Background: a random low-saturation colour, modulated by a slanted sinusoid.
    freq, angle, phase = uniform(0, (), 1.0, 5.0), uniform(1, (), 0.0, math.pi), uniform(2, (), 0.0, 2 * math.pi)
    wave = tf.sin(2 * math.pi * freq * (u * tf.cos(angle) + v * tf.sin(angle)) + phase)
    hsv = tf.stack([uniform(3), uniform(4, (), 0.0, 0.3), uniform(5, (), 0.25, 0.85)])
    image = tf.image.hsv_to_rgb(hsv) * (1.0 + 0.25 * wave[..., None])
    label = tf.zeros((image_size, image_size), tf.int32)

    num_objects = tf.random.stateless_uniform((), seeds[6], 1, max_objects + 1, dtype=tf.int32)
    classes = tf.random.stateless_uniform((max_objects,), seeds[7], 1, num_classes, dtype=tf.int32)
    centres = uniform(8, (max_objects, 2), 0.1, 0.9)
    radii = uniform(9, (max_objects,), *radius_range)
    looks = uniform(10, (max_objects, 5))  # hue jitter, saturation, value, stripe frequency, stripe phase

    # Every object slot at once, (N, S, S): its shape's mask, its striped colour.
    du, dv = u[None] - centres[:, 0, None, None], v[None] - centres[:, 1, None, None]
    r = radii[:, None, None]
    shape = ((classes - 1) % len(SHAPES))[:, None, None]
    inside = tf.where(shape == 0, du ** 2 + dv ** 2 <= r ** 2,
                      tf.where(shape == 1, tf.maximum(tf.abs(du), tf.abs(dv)) <= r * 0.85,
                               (dv <= r * 0.7) & (dv >= 2.0 * tf.abs(du) - r)))
    inside &= (tf.range(max_objects) < num_objects)[:, None, None]
    hue = (tf.cast(classes - 1, tf.float32) + 0.5 + 0.5 * (looks[:, 0] - 0.5)) / float(num_classes - 1)
    colours = tf.image.hsv_to_rgb(tf.stack([hue, 0.6 + 0.4 * looks[:, 1], 0.6 + 0.4 * looks[:, 2]], axis=-1))
    stripes = 1.0 + 0.15 * tf.sin(2 * math.pi * (3.0 + 5.0 * looks[:, 3, None, None]) * (u + v)[None]
                                  + 6.0 * looks[:, 4, None, None])
    # Later objects occlude earlier ones: each pixel shows the last slot that covers it,
    # in that slot's colour times its stripes (picked per pixel first, then multiplied:
    # the same products as painting every slot, 1 / max_objects of the multiplies).
    covered = tf.reduce_any(inside, axis=0)
    instance = max_objects - 1 - tf.argmax(tf.cast(tf.reverse(inside, [0]), tf.int32), axis=0, output_type=tf.int32)
    stripe = tf.gather(tf.transpose(stripes, [1, 2, 0]), instance[..., None], batch_dims=2)  # (S, S, 1)
    image = tf.where(covered[..., None], tf.gather(colours, instance) * stripe, image)
    label = tf.where(covered, tf.gather(classes, instance), label)
    instance = tf.where(covered, instance, -1)
    image += tf.random.stateless_normal(tf.shape(image), seeds[11], stddev=0.04)
    image = tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)

    # Boxes around each slot's visible pixels: first and last covered row / column.
    visible = tf.equal(instance[None], tf.range(max_objects)[:, None, None])
    rows, cols = tf.reduce_any(visible, axis=2), tf.reduce_any(visible, axis=1)  # (N, S) each

    def first(hits):
        return tf.argmax(tf.cast(hits, tf.int32), axis=1, output_type=tf.int32)

    def end(hits):
        return image_size - first(tf.reverse(hits, [1]))

    valid = tf.reduce_any(rows, axis=1)
    boxes = tf.cast(tf.stack([first(rows), first(cols), end(rows), end(cols)], axis=1), tf.float32) / image_size
    boxes = tf.where(valid[:, None], boxes, 0.0)
    return {"image": image, "label": tf.cast(label[..., None], tf.uint8), "boxes": boxes,
            "classes": classes, "valid": valid}


def synthetic_segmentation(num_examples, image_size=128, num_classes=5, seed=0):
    """``tf.data.Dataset`` of ``(image uint8 (S, S, 3), label uint8 (S, S, 1))``.

    ``num_classes`` counts the background (label 0); the same ``seed`` and index
    give the same scene. Use different seeds for train and eval sets.
    """
    if num_classes < 2 or num_classes > 255:
        raise ValueError(f"`num_classes` must be in [2, 255] (background + at least one shape); got {num_classes}.")

    def make(index):
        scene = render_scene(image_size, num_classes, tf.stack([tf.cast(seed, tf.int64), index]))
        return scene["image"], scene["label"]

    return tf.data.Dataset.range(num_examples).map(without_autograph(make), num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)


def synthetic_detection(num_examples, image_size=128, num_classes=5, seed=0, max_objects=6,
                        radius_range=(0.06, 0.25)):
    """``tf.data.Dataset`` of ``(image uint8 (S, S, 3), {"boxes": (max_objects, 4),
    "classes": (max_objects,) in [1, num_classes), "valid": (max_objects,)})``: the
    same kind of scenes with 1-6 smaller objects, boxes around each object's visible
    pixels (COCO-style class ids, 0 = background)."""
    if num_classes < 2 or num_classes > 255:
        raise ValueError(f"`num_classes` must be in [2, 255] (background + at least one shape); got {num_classes}.")

    def make(index):
        scene = render_scene(image_size, num_classes, tf.stack([tf.cast(seed, tf.int64), index]), max_objects,
                             radius_range)
        return scene["image"], {key: scene[key] for key in ("boxes", "classes", "valid")}

    return tf.data.Dataset.range(num_examples).map(without_autograph(make), num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
