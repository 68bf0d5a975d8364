"""Faster R-CNN's training targets and losses, as the TF Object Detection API's
``faster_rcnn_meta_arch`` computes them (the ``faster_rcnn_*`` configs' values).

First stage (RPN), per image: anchors not inside the image are left out (the
reference prunes them in training); an anchor is positive at IoU >= 0.7 with a
ground-truth box or when it is a box's best anchor, negative below 0.3, ignored
between; 256 anchors are sampled, at most half positive (``BalancedPositiveNegative
Sampler``); softmax objectness loss and smooth-L1 box loss (weight 2), each summed over
the sampled anchors and divided by their number.

Second stage, per image: of the proposals, a box at IoU >= 0.5 with a ground-truth box
takes its class, else background; 64 are sampled, at most a quarter positive; softmax
classification over all classes (background 0) and smooth-L1 (weight 2) on the
positive proposals' codes of their own class, divided by the sampled count.

Ground truth: normalised ``boxes`` (B, N, 4), ``classes`` (B, N) ids >= 1 and ``valid``
(B, N), bool or 0 / 1 (padding False / 0; give 0 / 1 numbers to ``fit`` from numpy under
``MirroredStrategy``: Keras 3.15 fails on bool arrays there, an ``AddN`` of bool).
"""

import tensorflow as tf

from mobilenet_tf.heads.ssdlite import box_coder, losses as ssd_losses, matcher

RPN_POSITIVE_IOU, RPN_NEGATIVE_IOU = 0.7, 0.3  # the proposal stage's ArgMaxMatcher
RPN_SAMPLES, RPN_POSITIVE_FRACTION = 256, 0.5  # first_stage_minibatch_size, positive_balance_fraction
DETECTION_POSITIVE_IOU = 0.5  # the detection stage's ArgMaxMatcher
DETECTION_SAMPLES, DETECTION_POSITIVE_FRACTION = 64, 0.25  # second_stage_batch_size, balance_fraction
LOCALIZATION_WEIGHT = 2.0  # first_ and second_stage_localization_loss_weight (classification: 1)


def batched_iou(boxes, gt_boxes, gt_valid):
    """(B, P, 4) boxes and (B, N, 4) ground truth -> (B, P, N) IoU; -1 against padding."""
    overlaps = matcher.broadcast_iou(boxes[:, :, None, :], gt_boxes[:, None, :, :])
    return tf.where(tf.cast(gt_valid, tf.bool)[:, None, :], overlaps, -1.0)


def sample(positive, negative, size, positive_fraction, seed=None):
    """(B, A) bool sampled: at most ``size * positive_fraction`` random positives per row,
    filled up to ``size`` with random negatives (the reference's balanced sampler)."""
    order = tf.random.uniform(tf.shape(positive), seed=seed)

    def take(candidates, count):
        score = tf.where(candidates, order, -1.0)
        rank = tf.argsort(tf.argsort(score, axis=1, direction="DESCENDING"), axis=1)
        return candidates & (rank < count[:, None])

    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), int(size * positive_fraction))
    num_negative = tf.minimum(size - num_positive, tf.reduce_sum(tf.cast(negative, tf.int32), axis=1))
    return take(positive, num_positive), take(negative, num_negative)


def rpn_targets(anchors, inside, gt):
    """Per anchor (B, A): positive / negative masks and the (B, A, 4) box codes of the
    matched ground truth. ``anchors`` (A, 4); ``inside`` (A,) bool."""
    batch = tf.shape(gt["boxes"])[0]
    tiled = tf.tile(anchors[None], [batch, 1, 1])
    overlaps = batched_iou(tiled, gt["boxes"], gt["valid"])  # (B, A, N)
    overlaps = tf.where(inside[None, :, None], overlaps, -1.0)
    best = tf.reduce_max(overlaps, axis=2)
    matched_gt = tf.argmax(overlaps, axis=2, output_type=tf.int32)
    # Each ground-truth box's best anchors (ties included) are positive whatever their IoU.
    best_for_gt = tf.reduce_max(overlaps, axis=1, keepdims=True)  # (B, 1, N)
    forced = tf.reduce_any((overlaps >= best_for_gt) & (best_for_gt > 0) & tf.cast(gt["valid"], tf.bool)[:, None, :],
                           axis=2)
    positive = ((best >= RPN_POSITIVE_IOU) | forced) & inside[None]
    negative = (best < RPN_NEGATIVE_IOU) & inside[None] & ~positive  # an image without boxes: all inside
    codes = box_coder.encode(tf.gather(gt["boxes"], matched_gt, batch_dims=1), tiled)
    return positive, negative, codes


def detection_targets(proposals, num_proposals, gt):
    """Per proposal (B, P): class ids (0 = background), positive mask, real (not padding)
    mask, and (B, P, 4) codes of the matched ground truth relative to the proposal."""
    overlaps = batched_iou(proposals, gt["boxes"], gt["valid"])
    best = tf.reduce_max(overlaps, axis=2)
    matched_gt = tf.argmax(overlaps, axis=2, output_type=tf.int32)
    real = tf.range(tf.shape(proposals)[1])[None] < num_proposals[:, None]
    positive = (best >= DETECTION_POSITIVE_IOU) & real
    classes = tf.where(positive, tf.gather(tf.cast(gt["classes"], tf.int32), matched_gt, batch_dims=1), 0)
    codes = box_coder.encode(tf.gather(gt["boxes"], matched_gt, batch_dims=1), proposals)
    return classes, positive, real, codes


def _per_image_mean(values, sampled):
    """(B, A) values summed over the sampled entries / their number, averaged over images."""
    count = tf.maximum(tf.reduce_sum(tf.cast(sampled, tf.float32), axis=1), 1.0)
    return tf.reduce_mean(tf.reduce_sum(tf.where(sampled, values, 0.0), axis=1) / count)


def rpn_losses(rpn_boxes, rpn_objectness, anchors, inside, gt, seed=None):
    """{"rpn_objectness": scalar, "rpn_box": scalar (weighted)} over sampled anchors."""
    positive, negative, codes = rpn_targets(anchors, inside, gt)
    positive, negative = sample(positive, negative, RPN_SAMPLES, RPN_POSITIVE_FRACTION, seed)
    sampled = positive | negative
    objectness = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(positive, tf.int32), logits=tf.cast(rpn_objectness, tf.float32))
    box = ssd_losses.smooth_l1(codes, rpn_boxes)
    return {"rpn_objectness": _per_image_mean(objectness, sampled),
            "rpn_box": LOCALIZATION_WEIGHT * _per_image_mean(tf.where(positive, box, 0.0), sampled)}


def sample_proposals(proposals, num_proposals, gt, seed=None):
    """The second stage's training minibatch: (B, S, 4) proposals, (B, S) class ids,
    (B, S) positive and (B, S) sampled masks, (B, S, 4) codes, S = ``DETECTION_SAMPLES``
    (images with fewer candidates are padded with unsampled entries)."""
    classes, positive, real, codes = detection_targets(proposals, num_proposals, gt)
    positive, negative = sample(positive, real & ~positive, DETECTION_SAMPLES, DETECTION_POSITIVE_FRACTION, seed)
    sampled = positive | negative
    count = tf.minimum(DETECTION_SAMPLES, tf.shape(proposals)[1])
    _, index = tf.math.top_k(tf.cast(sampled, tf.float32), k=count)  # sampled entries first
    pick = lambda values: tf.gather(values, index, batch_dims=1)
    return pick(proposals), pick(classes), pick(positive), pick(sampled), pick(codes)


def detection_losses(class_logits, box_codes, classes, positive, sampled, codes):
    """{"classification": scalar, "box": scalar (weighted)}: ``class_logits`` (B, S, C),
    ``box_codes`` (B, S, C - 1, 4) over the sampled proposals."""
    classification = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=classes, logits=tf.cast(class_logits, tf.float32))
    own = tf.gather(tf.cast(box_codes, tf.float32), tf.maximum(classes - 1, 0), batch_dims=2)  # (B, S, 4)
    box = ssd_losses.smooth_l1(codes, own)
    return {"classification": _per_image_mean(classification, sampled),
            "box": LOCALIZATION_WEIGHT * _per_image_mean(tf.where(positive, box, 0.0), sampled)}
