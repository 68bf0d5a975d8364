"""IoU matching and target assignment (TF OD API ``argmax_matcher`` semantics).

Each anchor takes the ground-truth box it overlaps most if that IoU is >= 0.5
(``matched_threshold``), else it is background; then every ground-truth box is
forced onto its best anchor (``force_match_for_each_row``), so no object goes
unmatched. Vectorised TF ops on padded ground truth, for use inside ``tf.data``.
"""

import tensorflow as tf

from mobilenet_tf.heads.ssdlite import box_coder

BACKGROUND = -1


def iou(boxes_a, boxes_b):
    """Pairwise IoU of (N, 4) and (M, 4) [ymin, xmin, ymax, xmax] boxes -> (N, M)."""
    return broadcast_iou(tf.convert_to_tensor(boxes_a, tf.float32)[:, None, :],
                         tf.convert_to_tensor(boxes_b, tf.float32)[None, :, :])


def broadcast_iou(a, b):
    """IoU of (..., 4) boxes ``a`` and ``b`` whose leading shapes broadcast together."""
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    intersection = inter_h * inter_w
    area = lambda box: tf.maximum(box[..., 2] - box[..., 0], 0.0) * tf.maximum(box[..., 3] - box[..., 1], 0.0)
    union = area(a) + area(b) - intersection
    return tf.where(union > 0, intersection / tf.maximum(union, 1e-12), 0.0)


def match(gt_boxes, valid, anchors, matched_threshold=0.5):
    """Index of the ground truth each anchor is matched to, or ``BACKGROUND``.

    Args:
        gt_boxes: (N, 4) padded ground truth.
        valid: (N,) bool, False for padding.
        anchors: (A, 4).

    Returns:
        (A,) int32 in [0, N) or ``BACKGROUND``.
    """
    overlaps = tf.where(valid[:, None], iou(gt_boxes, anchors), -1.0)  # padding never matches
    best_gt = tf.argmax(overlaps, axis=0, output_type=tf.int32)
    matches = tf.where(tf.reduce_max(overlaps, axis=0) >= matched_threshold, best_gt, BACKGROUND)
    # Force-match: each valid ground truth claims its best anchor; when two claim the same
    # anchor the first wins (the TF OD API's argmax over one-hot rows).
    best_anchor = tf.argmax(overlaps, axis=1, output_type=tf.int32)
    num_gt = tf.shape(gt_boxes)[0]
    candidates = tf.where(valid, tf.range(num_gt), num_gt)
    forced_gt = tf.tensor_scatter_nd_min(tf.fill(tf.shape(matches), num_gt), best_anchor[:, None], candidates)
    return tf.where(forced_gt < num_gt, forced_gt, matches)


def assign_targets(gt_boxes, gt_classes, valid, anchors, matched_threshold=0.5):
    """Regression and classification targets for one image.

    Args:
        gt_boxes: (N, 4) normalised boxes (padded); gt_classes: (N,) int class ids;
        valid: (N,) bool; anchors: (A, 4).

    Returns:
        box_targets (A, 4) encoded (zeros where unmatched), class_targets (A,) int32
        (``BACKGROUND`` where unmatched), matched (A,) bool.
    """
    matches = match(gt_boxes, valid, anchors, matched_threshold)
    matched = matches >= 0
    safe = tf.maximum(matches, 0)
    boxes = tf.gather(tf.convert_to_tensor(gt_boxes, tf.float32), safe)
    box_targets = tf.where(matched[:, None], box_coder.encode(boxes, anchors), 0.0)
    class_targets = tf.where(matched, tf.gather(tf.cast(gt_classes, tf.int32), safe), BACKGROUND)
    return box_targets, class_targets, matched
