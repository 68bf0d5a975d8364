"""The distillation teacher and its targets: a given teacher model (``load_teacher``),
one trained with FaceNet's triplet loss (``train_teacher``, kept in the run's
``teacher/`` and reused when the run resumes), and its cached embeddings of the
training images (``teacher_embeddings``).

Like every head, this module never imports the training package: ``train_teacher``
gets the recipe's ``train_embedding`` (which runs the shared ``run_training``).
``config`` below is the recipe's config (``recipes/facenet_distill.py``): these
functions read its fields of the same names.
"""

import json
import os

import numpy as np

from mobilenet_tf._keras import keras
from mobilenet_tf.heads.facenet import data, losses, model as model_lib, verification

OPTIMIZERS = {"adagrad": keras.optimizers.Adagrad, "adam": keras.optimizers.Adam,
              "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9)}


def make_evaluate(pairs, batch_size):
    """``model -> {accuracy, tar_at_far_1e-3}`` for the engine's per-epoch evaluation
    (logged as ``val_accuracy``, ``val_tar_at_far_1e-3``: TAR is FaceNet's VAL)."""
    def evaluate(model):
        results = verification.verify(model, pairs, batch_size)
        return {"accuracy": results["accuracy"], "tar_at_far_1e-3": results["val_at_far_1e-3"]}
    evaluate.result_keys = ("accuracy", "tar_at_far_1e-3")  # the epochs it skips log NaN for these
    return evaluate


def load_teacher(path, embedding_dim):
    """The teacher model file at ``path``, checked against the student's embedding size;
    None without a path."""
    if not path:
        return None
    teacher = keras.models.load_model(path, compile=False)
    dim = model_lib.embedding_dim(teacher)
    model_lib.input_size(teacher)
    if dim != embedding_dim:
        raise ValueError(f"the teacher {path!r} embeds into {dim} dimensions but the student into "
                         f"{embedding_dim}: pass --embedding-dim {dim} (distillation matches the "
                         "embeddings coordinate by coordinate).")
    return teacher


def train_teacher(config, train, pairs, directory, train_embedding, chief=True):
    """A teacher trained with the triplet loss in ``directory`` (the run's ``teacher/``);
    a finished one (``teacher.keras`` there, e.g. from an interrupted run) is reused.

    Args:
        train_embedding: ``(directory, build_model, loss, train_ds, epochs,
            learning_rate) -> model``, the recipe's trainer.
        chief: save ``teacher.keras`` (only the chief writes).
    """
    saved = os.path.join(directory, "teacher.keras")
    if os.path.exists(saved):
        return keras.models.load_model(saved, compile=False)
    os.makedirs(directory, exist_ok=True)
    train_ds = data.identity_batches(train, config.identities_per_batch, config.images_per_identity,
                                     config.teacher_input_size, seed=config.seed)
    teacher = train_embedding(
        directory, build_model=lambda: model_lib.build_teacher(
            config.teacher_backbone, config.teacher_alpha, config.teacher_input_size, config.embedding_dim,
            config.dropout_rate, config.teacher_weights),
        loss=losses.FaceNetLoss(config.margin, config.mining, triplet_weight=1.0), train_ds=train_ds,
        epochs=config.teacher_epochs, learning_rate=config.teacher_learning_rate)
    if chief:
        partial = os.path.join(directory, "teacher.partial.keras")  # a kill mid-save leaves no torn teacher.keras
        teacher.save(partial)
        os.replace(partial, saved)
    return teacher


def teacher_embeddings(teacher, train, directory, batch_size=64, write=True):
    """(N, D) unit-norm teacher embeddings of the ``train`` images, cached in ``directory``
    (the run dir: ``teacher_embeddings.npy``, written when ``write``: the chief) with the
    teacher's fingerprint (``teacher_fingerprint.json``), so a resumed run with another
    teacher recomputes them."""
    path = os.path.join(directory, "teacher_embeddings.npy")
    fingerprint_path = os.path.join(directory, "teacher_fingerprint.json")
    fingerprint = {"name": teacher.name, "images": len(train),
                   "weights_sum": float(sum(np.sum(np.asarray(w, np.float64)) for w in teacher.get_weights()))}
    if os.path.exists(path) and os.path.exists(fingerprint_path):
        with open(fingerprint_path) as f:
            if json.load(f) == fingerprint:
                return np.load(path)
    size = model_lib.input_size(teacher)
    embeddings = verification.embed(teacher, data.image_batches(train, size, batch_size))
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    if write:
        np.save(path, embeddings)
        with open(fingerprint_path, "w") as f:
            json.dump(fingerprint, f)
    return embeddings
