"""Segmentation loss and metrics: ignore-label cross-entropy, streaming confusion
matrix, mIoU, per-class IoU, pixel accuracy."""

import numpy as np
import tensorflow as tf

from mobilenet_tf._keras import keras
from mobilenet_tf.heads.segmentation.data import IGNORE_LABEL


def ignore_label_crossentropy(y_true, y_pred):
    """Softmax cross-entropy over the pixels whose label is not ``IGNORE_LABEL``.

    Normalised by the number of labelled pixels in the batch (DeepLab's and
    torchvision's ``ignore_index`` mean); under tf.distribute, in each replica's
    batch, as DeepLab does per clone. Returned per example, scaled so that their
    mean is that batch mean, which is what ``model.fit`` and
    ``tf.nn.compute_average_loss`` average.

    Args:
        y_true: (B, H, W, 1) or (B, H, W) integer labels.
        y_pred: (B, H, W, C) logits.

    Returns:
        (B,) float32.
    """
    labels = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:3]), tf.int32)
    valid = tf.not_equal(labels, IGNORE_LABEL)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, labels, 0), logits=tf.cast(y_pred, tf.float32))
    per_pixel *= tf.cast(valid, tf.float32)
    per_example_sum = tf.reduce_sum(per_pixel, axis=[1, 2])
    batch = tf.cast(tf.shape(y_pred)[0], tf.float32)
    labelled = tf.reduce_sum(tf.cast(valid, tf.float32))
    return per_example_sum * batch / tf.maximum(labelled, 1.0)


def mean_iou_metric(num_classes, name="miou"):
    """Streaming mIoU on logits for ``compile`` (a Keras MeanIoU ignoring 255)."""
    return keras.metrics.MeanIoU(num_classes, name=name, ignore_class=IGNORE_LABEL, sparse_y_pred=False)


class ConfusionMatrix:
    """Streaming confusion matrix of ``model`` over every labelled pixel of a dataset.

    ``ConfusionMatrix(model, num_classes)(dataset)`` -> (num_classes, num_classes)
    int64 numpy array, rows = truth, columns = prediction. The per-batch function
    is traced once and reused for every call (one per epoch in a recipe).
    """

    def __init__(self, model, num_classes):
        self.model, self.num_classes = model, num_classes

        @tf.function
        def batch_matrix(images, labels):
            predictions = tf.argmax(self.model(images, training=False), axis=-1, output_type=tf.int32)
            labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
            valid = tf.not_equal(labels, IGNORE_LABEL)
            return tf.math.confusion_matrix(tf.boolean_mask(labels, valid),
                                            tf.boolean_mask(tf.reshape(predictions, [-1]), valid),
                                            num_classes=num_classes, dtype=tf.int64)

        self._batch_matrix = batch_matrix

    def __call__(self, dataset, steps=None):
        """dataset: batches of (images (B, H, W, 3), labels (B, H, W, 1))."""
        total = np.zeros((self.num_classes, self.num_classes), np.int64)
        for images, labels in dataset.take(steps) if steps else dataset:
            total += self._batch_matrix(images, labels).numpy()
        return total


def scores(matrix, class_names=None):
    """mIoU, pixel accuracy and per-class IoU from a confusion matrix.

    IoU_c = TP / (TP + FP + FN); classes absent from both truth and predictions
    (zero union) are left out of the mean, as Cityscapes' evaluation does.

    Returns:
        dict with "miou", "pixel_accuracy", "per_class_iou" ({name: IoU or None}).
    """
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    iou = np.divide(true_positive, union, out=np.full_like(true_positive, np.nan), where=union > 0)
    names = class_names or [str(i) for i in range(len(iou))]
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else 0.0,
        "pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1.0)),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)},
    }
