"""Losses of face-embedding training: FaceNet's triplet loss and V1's distillation.

- Triplet loss (FaceNet, Schroff et al. 2015, eq. 1-3): for anchor a, positive p
  (same identity) and negative n, ``max(d(a, p) - d(a, n) + margin, 0)`` with
  squared L2 distances between unit embeddings and margin 0.2. Triplets are
  mined online in the batch:
  * ``"semi_hard"`` (FaceNet 3.2): every anchor-positive pair takes the closest
    negative that is still farther than the positive (``d_an > d_ap``); if there
    is none, the farthest negative (tf-addons' ``TripletSemiHardLoss`` rule).
  * ``"batch_hard"`` (Hermans et al. 2017): every anchor takes its farthest
    positive and closest negative.
- Distillation (MobileNet V1 section 4.7): the squared difference between the
  student's and the teacher's embeddings, ``||s - t||^2`` per example.

``FaceNetLoss`` combines them for ``model.fit``: ``y_true`` packs the identity
label and, when distilling, the teacher's embedding (``pack_targets``). All
losses return one value per example, as the training engine expects. Mining
happens within a replica's batch: feed P identities x K images in blocks of K
(``data.identity_batches``).
"""

import tensorflow as tf

from mobilenet_tf._keras import keras

MINING = ("semi_hard", "batch_hard")
FACENET_MARGIN = 0.2


def pairwise_squared_distances(embeddings):
    """(B, D) -> (B, B) squared L2 distances, >= 0, exact zeros on the diagonal."""
    embeddings = tf.cast(embeddings, tf.float32)
    norms = tf.reduce_sum(tf.square(embeddings), axis=1)
    distances = norms[:, None] - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True) + norms[None, :]
    distances = tf.maximum(distances, 0.0)
    return distances * (1.0 - tf.eye(tf.shape(embeddings)[0]))


def _masks(labels):
    """(positive pairs without the diagonal, negative pairs), both (B, B) float."""
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    return same - tf.eye(tf.shape(labels)[0]), 1.0 - same


def semi_hard_triplet_loss(labels, embeddings, margin=FACENET_MARGIN):
    """FaceNet's triplet loss with online semi-hard negatives, per anchor.

    Args:
        labels: (B,) identity ids.
        embeddings: (B, D), unit norm.
        margin: alpha of FaceNet's eq. 1.

    Returns:
        (B,): each anchor's mean loss over its positives (0 without a positive or
        a negative in the batch).
    """
    d = pairwise_squared_distances(embeddings)
    positive, negative = _masks(labels)
    positive *= tf.cast(tf.reduce_sum(negative, axis=1, keepdims=True) > 0, tf.float32)
    d_ap = d[:, :, None]  # (a, p, 1)
    d_an = d[:, None, :]  # (a, 1, n)
    farther = tf.cast(d_an > d_ap, tf.float32) * negative[:, None, :]  # semi-hard candidates (a, p, n)
    big = tf.reduce_max(d) + 1.0
    closest_farther = tf.reduce_min(d_an + (1.0 - farther) * big, axis=2)  # (a, p)
    farthest = tf.reduce_max(d * negative - (1.0 - negative) * big, axis=1, keepdims=True)  # (a, 1)
    has_farther = tf.reduce_sum(farther, axis=2) > 0
    chosen = tf.where(has_farther, closest_farther, farthest)
    pair_loss = tf.maximum(d - chosen + margin, 0.0) * positive
    count = tf.reduce_sum(positive, axis=1)
    return tf.math.divide_no_nan(tf.reduce_sum(pair_loss, axis=1), count)


def batch_hard_triplet_loss(labels, embeddings, margin=FACENET_MARGIN):
    """Batch-hard triplet loss: farthest positive and closest negative per anchor.

    Args and Returns: as ``semi_hard_triplet_loss`` (0 for an anchor without a
    positive or a negative in the batch).
    """
    d = pairwise_squared_distances(embeddings)
    positive, negative = _masks(labels)
    big = tf.reduce_max(d) + 1.0
    hardest_positive = tf.reduce_max(d * positive, axis=1)
    hardest_negative = tf.reduce_min(d + (1.0 - negative) * big, axis=1)
    valid = tf.cast((tf.reduce_sum(positive, axis=1) > 0) & (tf.reduce_sum(negative, axis=1) > 0), tf.float32)
    return tf.maximum(hardest_positive - hardest_negative + margin, 0.0) * valid


def distillation_loss(teacher_embeddings, student_embeddings):
    """V1 section 4.7: ``||student - teacher||^2`` per example, (B, D) x 2 -> (B,)."""
    difference = tf.cast(student_embeddings, tf.float32) - tf.cast(teacher_embeddings, tf.float32)
    return tf.reduce_sum(tf.square(difference), axis=-1)


TRIPLET_LOSSES = {"semi_hard": semi_hard_triplet_loss, "batch_hard": batch_hard_triplet_loss}


def pack_targets(labels, teacher_embeddings=None):
    """``y_true`` for ``FaceNetLoss``: (B, 1) labels, or (B, 1 + D) labels then the
    teacher's embedding. Labels travel as float32 (exact below 2**24 identities)."""
    labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
    if teacher_embeddings is None:
        return labels
    return tf.concat([labels, tf.cast(teacher_embeddings, tf.float32)], axis=1)


@keras.utils.register_keras_serializable(package="mobilenet_tf.facenet")
class FaceNetLoss(keras.losses.Loss):
    """``triplet_weight * triplet + distill_weight * distillation``, per example.

    ``y_true`` comes from ``pack_targets``: (B, 1) labels for triplet-only
    training, (B, 1 + D) with the teacher's embeddings to distil.

    Args:
        margin: triplet margin (FaceNet 0.2).
        mining: "semi_hard" (FaceNet) or "batch_hard".
        triplet_weight, distill_weight: >= 0, not both 0.
    """

    def __init__(self, margin=FACENET_MARGIN, mining="semi_hard", triplet_weight=1.0, distill_weight=0.0,
                 name="facenet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check_loss_options(margin, mining, triplet_weight, distill_weight)
        self.margin, self.mining = float(margin), mining
        self.triplet_weight, self.distill_weight = float(triplet_weight), float(distill_weight)

    def call(self, y_true, y_pred):
        if self.distill_weight and y_true.shape[-1] == 1:
            raise ValueError("distillation needs the teacher's embeddings in y_true: pass "
                             "pack_targets(labels, teacher_embeddings), (B, 1 + D), not labels alone.")
        y_true = tf.cast(y_true, tf.float32)
        loss = tf.zeros(tf.shape(y_pred)[:1], tf.float32)
        if self.triplet_weight:
            loss += self.triplet_weight * TRIPLET_LOSSES[self.mining](y_true[:, 0], y_pred, self.margin)
        if self.distill_weight:
            loss += self.distill_weight * distillation_loss(y_true[:, 1:], y_pred)
        return loss

    def get_config(self):
        return dict(super().get_config(), margin=self.margin, mining=self.mining,
                    triplet_weight=self.triplet_weight, distill_weight=self.distill_weight)


def check_loss_options(margin, mining, triplet_weight, distill_weight):
    if mining not in MINING:
        raise ValueError(f"`mining` must be one of {MINING}; got {mining!r}.")
    if not margin >= 0:
        raise ValueError(f"`margin` must be >= 0 (FaceNet: 0.2); got {margin!r}.")
    if triplet_weight < 0 or distill_weight < 0 or triplet_weight + distill_weight <= 0:
        raise ValueError(f"the loss weights must be >= 0 and not both 0; got triplet_weight={triplet_weight}, "
                         f"distill_weight={distill_weight}.")
