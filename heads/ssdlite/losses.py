"""SSDLite losses, normalised by the number of matched anchors in the batch.

- ``focal``: sigmoid focal loss (alpha 0.75, gamma 2: the V3 config's
  ``weighted_sigmoid_focal``) on the object columns 1..C-1; background anchors have
  all-zero targets there (RetinaNet's form, which the -4.6 class-bias prior assumes;
  column 0 is used only by the softmax loss), plus smooth L1 (Huber, delta 1) on the
  matched anchors' box codes.
- ``hard_negative_mining``: the SSD / V2-paper loss: softmax cross-entropy on the
  matched anchors and on the 3 hardest negatives per positive in each image.
- ``sigmoid_hard_negative_mining``: the V1 SSD 300 loss
  (``ssd_mobilenet_v1_coco.config``: ``weighted_sigmoid`` over all columns,
  background included, and ``hard_example_miner`` with
  ``max_negatives_per_positive: 3``, ``min_negatives_per_image: 0``). The miner's
  other two settings change nothing here and are left out: ``num_hard_examples:
  3000`` caps positives + negatives per image, above the 1917 anchors at 300, and
  its NMS at IoU 0.99 only drops negatives whose predicted boxes coincide.

Targets (from ``matcher.assign_targets``): class ids (B, A) with
``matcher.BACKGROUND`` (-1) or 0 for background, and box codes (B, A, 4) with a
matched mask. The Keras losses ``ClassLoss`` / ``BoxLoss`` return per-example
values scaled so that their batch mean is the normalised total, which is what
``model.fit`` and ``tf.nn.compute_average_loss`` average.
"""

import tensorflow as tf

from mobilenet_tf._keras import keras

LOSSES = ("focal", "hard_negative_mining", "sigmoid_hard_negative_mining")
# How each loss turns logits into scores (the detector's score converter).
ACTIVATIONS = {"focal": "sigmoid", "hard_negative_mining": "softmax", "sigmoid_hard_negative_mining": "sigmoid"}


def _background_to_zero(class_targets):
    return tf.maximum(tf.cast(class_targets, tf.int32), 0)


def sigmoid_focal(class_targets, logits, alpha=0.75, gamma=2.0):
    """(B, A) focal loss summed over the object columns 1..C-1 (background: all-zero targets)."""
    labels = tf.one_hot(_background_to_zero(class_targets), tf.shape(logits)[-1], dtype=tf.float32)[..., 1:]
    logits = tf.cast(logits, tf.float32)[..., 1:]
    probabilities = tf.sigmoid(logits)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    p_t = labels * probabilities + (1 - labels) * (1 - probabilities)
    alpha_t = labels * alpha + (1 - labels) * (1 - alpha)
    return tf.reduce_sum(alpha_t * tf.pow(1 - p_t, gamma) * cross_entropy, axis=-1)


def smooth_l1(box_targets, codes, delta=1.0):
    """(B, A) Huber loss summed over the 4 box codes."""
    error = tf.abs(tf.cast(codes, tf.float32) - tf.cast(box_targets, tf.float32))
    quadratic = tf.minimum(error, delta)
    return tf.reduce_sum(0.5 * quadratic ** 2 + delta * (error - quadratic), axis=-1)


def hard_negative_softmax(class_targets, logits, negatives_per_positive=3, min_negatives=3):
    """(B, A) softmax cross-entropy on positives and on each image's hardest negatives."""
    labels = _background_to_zero(class_targets)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    return _hard_negatives(loss, labels > 0, negatives_per_positive, min_negatives)


def hard_negative_sigmoid(class_targets, logits, negatives_per_positive=3, min_negatives=0):
    """(B, A) sigmoid cross-entropy summed over every column (background column 0
    included: its target is 1 on background anchors), on positives and on each image's
    hardest negatives."""
    labels = _background_to_zero(class_targets)
    one_hot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=tf.float32)
    loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=one_hot, logits=tf.cast(logits, tf.float32)),
                         axis=-1)
    return _hard_negatives(loss, labels > 0, negatives_per_positive, min_negatives)


def _hard_negatives(loss, positive, negatives_per_positive, min_negatives):
    """``loss`` (B, A) kept on the positives and on the ``negatives_per_positive`` x
    positives (at least ``min_negatives``) highest-loss negatives of each image; 0 elsewhere."""
    num_negatives = tf.maximum(negatives_per_positive * tf.reduce_sum(tf.cast(positive, tf.int32), axis=1),
                               min_negatives)  # (B,)
    negative_loss = tf.where(positive, -1.0, loss)
    rank = tf.argsort(tf.argsort(negative_loss, axis=1, direction="DESCENDING"), axis=1)  # 0 = hardest
    hard = (rank < num_negatives[:, None]) & ~positive
    return tf.where(positive | hard, loss, 0.0)


def _normalised(per_anchor, matched):
    """Per-example sums scaled so that their mean is sum / max(matches in batch, 1)."""
    batch = tf.cast(tf.shape(per_anchor)[0], tf.float32)
    matches = tf.reduce_sum(tf.cast(matched, tf.float32))
    return tf.reduce_sum(per_anchor, axis=1) * batch / tf.maximum(matches, 1.0)


def pack_box_targets(box_targets, matched):
    """(..., A, 4) codes and (..., A) mask -> (..., A, 5), the ``BoxLoss`` target."""
    return tf.concat([box_targets, tf.cast(matched, tf.float32)[..., None]], axis=-1)


class ClassLoss(keras.losses.Loss):
    """Classification loss for ``compile(loss={"classes": ClassLoss(), ...})``."""

    def __init__(self, kind="focal", name="class_loss", **kwargs):
        if kind not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}; got {kind!r}.")
        super().__init__(name=name, **kwargs)
        self.kind = kind

    def call(self, y_true, y_pred):
        targets = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(y_pred)[:2])
        if self.kind == "focal":
            per_anchor = sigmoid_focal(targets, y_pred)
        elif self.kind == "hard_negative_mining":
            per_anchor = hard_negative_softmax(targets, y_pred)
        else:
            per_anchor = hard_negative_sigmoid(targets, y_pred)
        return _normalised(per_anchor, targets > 0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


class BoxLoss(keras.losses.Loss):
    """Smooth-L1 box loss on matched anchors; ``y_true`` is ``pack_box_targets``' (B, A, 5)."""

    def __init__(self, name="box_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        matched = y_true[..., 4] > 0
        per_anchor = tf.where(matched, smooth_l1(y_true[..., :4], y_pred), 0.0)
        return _normalised(per_anchor, matched)
