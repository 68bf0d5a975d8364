"""Evaluating exported files against the Keras model they came from.

``evaluate_tflite`` is what ``recipes/imagenet.py --tflite`` reports: each
classifier file's top-1 on the validation batches, its top-1 agreement with the
Keras model, and its bytes. Deployment code: it never imports training.
"""

import os

import numpy as np

from mobilenet_tf import export


def evaluate_tflite(paths, model, val_ds, steps, batch_size=64):
    """.tflite classifiers ({format: path}) on ``steps`` batches of ``val_ds`` (images,
    one-hot labels), one pass with the Keras model run once per image, fed
    ``batch_size`` images at a time (an interpreter allocates for the whole batch).

    Returns:
        {format: {"top1", "agreement" (share of images where its top-1 is the Keras
        model's), "bytes"}}.

    Example:
        >>> evaluate_tflite({"int8": "run/model_int8.tflite"}, model, val_ds, steps=10)
    """
    files = {fmt: export.TFLiteModel(path) for fmt, path in paths.items()}
    hits, agreements, seen = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0), 0
    for images, one_hot in val_ds.take(steps).unbatch().batch(batch_size):
        labels, reference = np.argmax(one_hot, -1), np.argmax(model(images, training=False), -1)
        for fmt, tflite in files.items():
            predicted = np.argmax(tflite(images), -1)
            hits[fmt] += int(np.sum(predicted == labels))
            agreements[fmt] += int(np.sum(predicted == reference))
        seen += len(labels)
    return {fmt: dict(top1=hits[fmt] / seen, agreement=agreements[fmt] / seen, bytes=os.path.getsize(path))
            for fmt, path in paths.items()}
