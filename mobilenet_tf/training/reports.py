"""Reports at the end of a run: throughput, curves.png, model.keras + SavedModel,
metrics.json (which marks the run finished)."""

import json

from mobilenet_tf import export
from mobilenet_tf._keras import keras
from mobilenet_tf.training.run_dir import settle_previous_run


def throughput(history, steps_per_epoch, global_batch_size):
    """{epochs, train_seconds, images_per_second} over every epoch in ``history``."""
    epochs = len(history.get("loss", []))
    seconds = sum(history.get("train_seconds", []))
    images = epochs * steps_per_epoch * global_batch_size
    return dict(epochs=epochs, train_seconds=seconds, images_per_second=images / seconds if seconds else 0.0)


def plot_history(history, path, metric="top1"):
    """Loss and ``metric`` per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        if history.get(key):
            left.plot(range(1, len(history[key]) + 1), history[key], label=key)
    for key in (metric, f"val_{metric}"):
        if history.get(key):
            right.plot(range(1, len(history[key]) + 1), history[key], label=key)
    left.set_xlabel("epoch"), right.set_xlabel("epoch"), left.set_title("loss"), right.set_title(metric)
    left.legend(), right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def export_model(model, run, saved_model=True):
    """``model.keras`` (uncompiled) and, with ``saved_model``, a SavedModel of the
    inference call in the run directory: ``serve(images)`` and the ``serving_default``
    signature (input ``images``, float32 batches of the model's input shape), for TF
    Serving and ``tf.saved_model.load``. Written by ``export.save_inference``: what
    ``model.export()`` serves, in a third of its time."""
    # Saved uncompiled: the training's loss, metrics and lr schedule are classes of the
    # training code, which `keras.models.load_model` after `import mobilenet_tf` would
    # not find. (Checkpoints and the backups hold the training state.)
    try:
        inference = keras.Model(model.input, model.output, name=model.name)  # the same layers
    except AttributeError:  # no layer graph to view (a subclassed model): saved as it is
        inference = model
    inference.save(run.path("model.keras"))
    if saved_model:
        export.save_inference(model, run.path("saved_model"))


def write_metrics(run, metrics):
    """metrics.json, which marks the run finished (and releases the run ``--overwrite`` set aside)."""
    with open(run.path("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    settle_previous_run(run.root)
