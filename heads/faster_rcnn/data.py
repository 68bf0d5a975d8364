"""Faster R-CNN input pipelines: the reference's keep-aspect-ratio resizing, padded
batches.

The sources are SSDLite's (``ssdlite.data``: TFDS COCO or synthetic shapes, the same
``(image, objects)`` examples). The TF Object Detection API's ``faster_rcnn_*``
configs resize with ``keep_aspect_ratio_resizer`` (min side 600, max side 1024; the
V1 paper's "Faster-RCNN 300" uses min side 300) and augment with a random horizontal
flip only; batches are padded at the bottom and right to the largest image in them.

Boxes in a batch are normalised to the padded canvas (what the model's anchors and
proposals are relative to); ``info["window"]`` (B, 2) is each image's extent in the
canvas (resized height / canvas height, resized width / canvas width), which turns
canvas boxes back into image boxes for COCO json (``ssdlite.evaluation``).
"""

import tensorflow as tf

from mobilenet_tf.data import without_autograph
from mobilenet_tf.data.classification import batched
from mobilenet_tf.heads.ssdlite import data as ssd_data

MIN_SIDE, MAX_SIDE = 600, 1024  # keep_aspect_ratio_resizer of the faster_rcnn_* configs
IMAGE_SIZE_RANGE = (128, 2048)  # the --image-size values the recipe takes


def resized_shape(height, width, min_side, max_side=MAX_SIDE):
    """(height, width) scaled so the short side is ``min_side`` unless that makes the
    long side exceed ``max_side`` (then the long side is ``max_side``)."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.minimum(min_side / tf.minimum(height, width), max_side / tf.maximum(height, width))
    return tf.cast(tf.round(height * scale), tf.int32), tf.cast(tf.round(width * scale), tf.int32)


def resize_keep_aspect(image, min_side, max_side=MAX_SIDE):
    """(H, W, 3) -> float32 (h, w, 3) in [0, 255] (``resized_shape``); normalised boxes
    are unchanged by it."""
    shape = tf.shape(image)
    size = resized_shape(shape[0], shape[1], min_side, max_side)
    return tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), size), 0.0, 255.0)


def to_canvas(boxes, window):
    """(B, N, 4) boxes normalised to each image -> normalised to the padded canvas
    (``window`` (B, 2): the image's extent in the canvas)."""
    return boxes * tf.tile(window, [1, 2])[:, None, :]


def _window(images, sizes):
    """(B, 2) extent of each image (its (h, w) ``sizes``) in the padded batch ``images``."""
    canvas = tf.cast(tf.shape(images)[1:3], tf.float32)
    return tf.cast(sizes, tf.float32) / canvas


def make_train_pipeline(split, *, min_side, max_side=MAX_SIDE, batch_size, shuffle_buffer=1000,
                        max_boxes=ssd_data.MAX_BOXES, deterministic=False, seed=0):
    """Repeated, shuffled, flipped, keep-aspect-resized padded batches ``(images (B, H,
    W, 3) float32 in [0, 255], {"boxes" (B, M, 4) on the canvas, "classes" (B, M) int32,
    "valid" (B, M) float32 0 / 1})`` for ``FasterRCNN``'s ``fit`` (crowd and degenerate
    boxes invalid)."""

    def prepare(image, objects):
        boxes, valid, _ = ssd_data.clean_boxes(objects["boxes"], objects["classes"], ~objects["crowd"],
                                               split.num_classes)
        image, boxes = ssd_data.random_flip(tf.cast(image, tf.float32), boxes, seed)
        image = resize_keep_aspect(image, min_side, max_side)
        boxes, classes, valid = ssd_data.pad_objects(boxes, objects["classes"], valid, max_boxes)
        return image, {"boxes": boxes, "classes": classes, "valid": tf.cast(valid, tf.float32),
                       "size": tf.shape(image)[:2]}

    def to_batch_canvas(images, gt):
        window = _window(images, gt.pop("size"))
        return images, dict(gt, boxes=to_canvas(gt["boxes"], window))

    ds = batched(split.dataset, prepare, training=True, batch_size=batch_size, num_examples=split.num_examples,
                 shuffle_buffer=shuffle_buffer, deterministic=deterministic, seed=seed, padded=True)
    return ds.map(without_autograph(to_batch_canvas), num_parallel_calls=tf.data.AUTOTUNE)


def make_eval_pipeline(split, *, min_side, max_side=MAX_SIDE, batch_size, max_boxes=ssd_data.MAX_BOXES):
    """Finite padded batches of ``(images (B, H, W, 3) float32, info)``:
    ``ssd_data.eval_info`` (ground truth normalised to each image, original size, id)
    plus "window"."""

    def prepare(image, objects):
        resized = resize_keep_aspect(image, min_side, max_side)
        info = ssd_data.eval_info(tf.shape(image), objects, split.num_classes, max_boxes)
        return resized, dict(info, size=tf.shape(resized)[:2])

    def add_window(images, info):
        return images, dict(info, window=_window(images, info.pop("size")))

    # In order: which images share a batch sets their padding, and so their detections
    # (an --eval-only run reproduces the training run's AP).
    ds = batched(split.dataset, prepare, training=False, batch_size=batch_size, num_examples=split.num_examples,
                 shuffle_buffer=1, padded=True, deterministic=True)
    return ds.map(without_autograph(add_window))
