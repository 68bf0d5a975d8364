"""Faster R-CNN's first-stage anchors, as the TF Object Detection API's
``grid_anchor_generator`` makes them (the ``faster_rcnn_*`` configs' settings).

At every position (i, j) of the stride-16 feature map, one box per (scale, aspect
ratio) pair, centred at (16 i, 16 j) pixels (the generator's default offset 0), of
height ``scale / sqrt(ratio) * 256`` and width ``scale * sqrt(ratio) * 256`` pixels:
12 boxes of 64 to 512 pixels per position. Anchors are normalised
``[ymin, xmin, ymax, xmax]`` of the (padded) image, in the order the RPN's outputs
flatten to: row, column, box.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class GridAnchorSpec:
    """``first_stage_anchor_generator.grid_anchor_generator`` of the reference configs."""

    scales: tuple = (0.25, 0.5, 1.0, 2.0)
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    stride: int = 16  # height_stride, width_stride (= first_stage_features_stride)
    base_size: int = 256  # the proto's default base_anchor_height / width

    @property
    def boxes_per_location(self):
        return len(self.scales) * len(self.aspect_ratios)


def grid_anchors(feature_size, image_size, spec=GridAnchorSpec()):
    """Anchors of a (height, width) feature map over an image of (height, width) pixels.

    Args:
        feature_size, image_size: int pairs or int32 tensors (traced shapes work).

    Returns:
        float32 (feature height * feature width * boxes, 4), normalised to the image.
    """
    scales, ratios = tf.meshgrid(tf.constant(spec.scales, tf.float32), tf.constant(spec.aspect_ratios, tf.float32))
    scales, ratios = tf.reshape(scales, [-1]), tf.reshape(ratios, [-1])
    heights = scales / tf.sqrt(ratios) * spec.base_size
    widths = scales * tf.sqrt(ratios) * spec.base_size
    rows = tf.cast(tf.range(feature_size[0]), tf.float32) * spec.stride
    cols = tf.cast(tf.range(feature_size[1]), tf.float32) * spec.stride
    cy, cx, h = tf.meshgrid(rows, cols, heights, indexing="ij")
    _, _, w = tf.meshgrid(rows, cols, widths, indexing="ij")
    image_h, image_w = tf.cast(image_size[0], tf.float32), tf.cast(image_size[1], tf.float32)
    boxes = tf.stack([(cy - h / 2) / image_h, (cx - w / 2) / image_w, (cy + h / 2) / image_h, (cx + w / 2) / image_w],
                     axis=-1)
    return tf.reshape(boxes, [-1, 4])
