"""The run loop every recipe shares: run directory, callbacks, fit, resume, export.

``run_training(...)`` builds the model under the strategy's scope, then trains with
``model.fit`` and stock Keras callbacks (BackupAndRestore, ModelCheckpoint,
TensorBoard, CSVLogger, TerminateOnNaN, SwapEMAWeights). Keras 3 ``fit`` fails
under MultiWorkerMirroredStrategy (keras-team/keras#20585), so there the same
contract is met by a custom loop (``strategy.run`` over a distributed dataset,
``tf.train.CheckpointManager`` for resume).

Run directory layout::

    config.json         the resolved config
    backup/             BackupAndRestore state (deleted when the run finishes)
    best.weights.h5     best validation top-1 (EMA weights when EMA is on)
    last.weights.h5     after the last epoch
    history.csv         one row per epoch (appended across resumes)
    logs/               TensorBoard
    metrics.json        final metrics; its presence marks a finished run
    curves.png          loss and accuracy per epoch
    model.keras         the final model; saved_model/ its SavedModel export
"""

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

from mobilenet_tf._keras import keras
from mobilenet_tf.data import BAD_DATA
from mobilenet_tf.training import config as config_lib, schedules, strategy as strategy_lib


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: str

    def path(self, name):
        return os.path.join(self.root, name)


def prepare_run_dir(output_dir, overwrite=False):
    """Create the run directory; refuse to overwrite a finished run unless ``overwrite``."""
    run = RunDir(output_dir)
    if os.path.exists(run.path("metrics.json")):
        if not overwrite:
            raise ValueError(
                f"{output_dir!r} holds a finished run (metrics.json exists); pass --overwrite to replace "
                "it or choose another --output-dir."
            )
        shutil.rmtree(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    return run


class NaNLossError(RuntimeError):
    pass


def setup(config):
    """What every recipe does first: pick the strategy, check the batch divides over
    its replicas, set the precision policy and the seeds. Returns (strategy, policy).

    ``config`` needs: strategy, num_cpu_devices, global_batch_size,
    mixed_precision, force_mixed_precision, seed, deterministic.
    """
    strategy = strategy_lib.get_strategy(config.strategy, config.num_cpu_devices)
    strategy_lib.per_replica_batch(config.global_batch_size, strategy)  # divisibility check
    policy = strategy_lib.set_precision(config.mixed_precision, config.force_mixed_precision)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return strategy, policy


def open_run(config, strategy):
    """The run directory (``config.output_dir``) with config.json; returns (run, is_chief).

    Only the chief creates (or, with ``config.overwrite``, replaces) it; call it
    after loading the data, so that bad data arguments leave nothing behind.
    """
    chief = strategy_lib.is_chief(strategy)
    if not chief:
        return RunDir(config.output_dir), False
    run = prepare_run_dir(config.output_dir, config.overwrite)
    config_lib.save_config(config, run.path("config.json"))
    return run, True


def throughput(history, steps_per_epoch, global_batch_size):
    """{epochs, train_seconds, images_per_second} over every epoch in ``history``."""
    epochs = len(history.get("loss", []))
    seconds = sum(history.get("train_seconds", []))
    images = epochs * steps_per_epoch * global_batch_size
    return dict(epochs=epochs, train_seconds=seconds, images_per_second=images / seconds if seconds else 0.0)


def recipe_main(main, config_cls, argv=None):
    """A recipe's ``__main__``: flags -> config -> ``main``; exit 2 with the message on
    bad input (``ValueError``, or a data check failing inside ``tf.data``: its message
    starts with ``data.BAD_DATA``), 1 when the loss became NaN."""
    prog = os.path.basename(sys.argv[0])
    try:
        main(config_lib.config_from_args(config_cls, argv))
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except tf.errors.InvalidArgumentError as error:
        if BAD_DATA not in error.message:
            raise
        detail = error.message.split(BAD_DATA, 1)[1].split("\n")[0]
        print(f"{prog}: error: {BAD_DATA}{detail}", file=sys.stderr)
        sys.exit(2)
    except NaNLossError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        sys.exit(1)


class _EpochTimer(keras.callbacks.Callback):
    """Adds ``train_seconds`` (the epoch's training time, without validation) to the
    epoch's logs, so history.csv keeps it across resumed runs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._seconds = None

    def on_test_begin(self, logs=None):
        if self._seconds is None:
            self._seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_seconds"] = self._seconds if self._seconds is not None else time.perf_counter() - self._start


class _ScheduledEvaluation:
    """``evaluate(model)`` on the first epoch of the process, every ``every``-th epoch
    and the last; other epochs give NaN for its keys (never "best", gaps in the
    curves). Returns the results as ``val_<key>``; used by both training loops."""

    def __init__(self, evaluate, every, epochs):
        self._evaluate, self._every, self._epochs = evaluate, every, epochs
        self._keys = None

    def __call__(self, model, epoch):
        if self._keys is None or (epoch + 1) % self._every == 0 or epoch + 1 == self._epochs:
            results = self._evaluate(model)
            self._keys = list(results)
        else:
            results = {key: float("nan") for key in self._keys}
        return {f"val_{key}": value for key, value in results.items()}


class _Evaluate(keras.callbacks.Callback):
    """Adds the scheduled evaluation's ``val_<key>`` results to the epoch's logs,
    before the checkpoint and CSV callbacks read them."""

    def __init__(self, evaluation):
        super().__init__()
        self._evaluation = evaluation

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._evaluation(self.model, epoch))


def _callbacks(run, monitor, ema, extra=(), evaluate=None, evaluate_every=1, epochs=1):
    # The best score so far survives a resume (ModelCheckpoint alone would restart from -inf).
    best = best_so_far(run, monitor)
    callbacks = [keras.callbacks.TerminateOnNaN(), _EpochTimer()]
    if ema:
        # Swap in EMA weights for evaluation and for the checkpoints written at epoch end.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if evaluate is not None:
        callbacks.append(_Evaluate(_ScheduledEvaluation(evaluate, evaluate_every, epochs)))
    callbacks += [
        keras.callbacks.ModelCheckpoint(run.path("best.weights.h5"), monitor=monitor, mode="max",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=None if best == -np.inf else best),
        keras.callbacks.ModelCheckpoint(run.path("last.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(run.path("history.csv"), append=True),
        keras.callbacks.TensorBoard(run.path("logs")),
        *extra,
    ]
    backup = keras.callbacks.BackupAndRestore(run.path("backup"))
    # The backup marks an epoch done. Without EMA it goes last, so that an epoch killed
    # during its (possibly long) evaluation or checkpointing is redone on resume. With
    # EMA it must go first: after SwapEMAWeights the model holds the averaged weights,
    # which must not be saved as the training weights.
    return [backup, *callbacks] if ema else [*callbacks, backup]


def best_so_far(run, monitor):
    """The highest finite ``monitor`` value in history.csv, -inf when none."""
    values = [v for v in read_history(run).get(monitor, []) if math.isfinite(v)]
    return max(values, default=-np.inf)


def read_history(run):
    """Per-epoch history from ``history.csv`` (covers resumed runs too)."""
    if not os.path.exists(run.path("history.csv")):
        return {}
    with open(run.path("history.csv")) as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows if r.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def run_training(
    *, build, train_ds, eval_ds, epochs, steps_per_epoch, eval_steps, run, strategy,
    global_batch_size, monitor="val_top1", ema=False, jit_compile=False, steps_per_execution=1,
    sync_batchnorm=True, verbose="auto", callbacks=(), evaluate=None, evaluate_every=1,
):
    """Train and evaluate under ``strategy``; returns ``(model, history)``.

    ``history`` is read back from history.csv, so it covers every epoch of a
    resumed run; ``history["train_seconds"]`` is each epoch's training time.

    Args:
        build: ``() -> (model, optimizer, loss, metrics)``, called inside the
            strategy's scope. ``loss`` takes (y_true, y_pred) and returns one value
            per example, or is a dict of such losses keyed like the model's
            outputs (summed); ``metrics`` are Keras metric objects.
        train_ds: repeated, batched by the *global* batch size.
        eval_ds: batched evaluation data (finite) for ``metrics``, or None.
        epochs, steps_per_epoch, eval_steps: loop lengths.
        run: the ``RunDir``.
        monitor: metric whose maximum picks ``best.weights.h5``.
        ema: the optimizer keeps a weight EMA; evaluate and checkpoint it.
        sync_batchnorm: with several replicas, all-reduce BatchNormalization
            statistics (SyncBN), so every replica and worker keeps the same moving
            statistics; without it workers end with different ones.
        callbacks: more Keras callbacks for ``fit`` (not used by the multi-worker loop).
        evaluate: optional ``model -> {name: float}`` run after every epoch (on
            the EMA weights when ``ema``); its results join the history as
            ``val_<name>`` and may be the ``monitor``. For metrics a Keras metric
            cannot compute on a batch: full-resolution mIoU, COCO mAP, LFW
            verification.
        evaluate_every: run ``evaluate`` every N epochs (and on the last, and
            the first of a process); other epochs log NaN for its keys.

    Raises:
        NaNLossError: the loss became NaN (the last good checkpoint stays on disk).
    """
    with strategy.scope():
        model, optimizer, loss, metrics = build()
    if sync_batchnorm and strategy.num_replicas_in_sync > 1:
        schedules.configure_batchnorm(model, synchronized=True)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _custom_loop(model, optimizer, loss, metrics, train_ds, eval_ds, epochs, steps_per_epoch,
                            eval_steps, run, strategy, global_batch_size, monitor, ema, evaluate, evaluate_every)
    with strategy.scope():
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile,
                      steps_per_execution=steps_per_execution)
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=eval_ds,
                        validation_steps=eval_steps if eval_ds is not None else None,
                        callbacks=_callbacks(run, monitor, ema, callbacks, evaluate, evaluate_every, epochs),
                        verbose=verbose)
    losses = history.history.get("loss", [])
    if model.stop_training and losses and not math.isfinite(losses[-1]):
        raise NaNLossError(
            f"training stopped at epoch {len(losses)}: the loss became NaN. Lower the learning rate or check "
            f"the data; the last good weights are in {run.path('last.weights.h5')} and the backup in "
            f"{run.path('backup')} lets a rerun resume."
        )
    return model, read_history(run)


def _custom_loop(model, optimizer, loss_fn, metrics, train_ds, eval_ds, epochs, steps_per_epoch, eval_steps,
                 run, strategy, global_batch_size, monitor, ema, evaluate, evaluate_every):
    """The multi-worker path: same outputs as ``fit`` (checkpoints, history, resume)."""
    chief = strategy_lib.is_chief(strategy)
    worker_dir = run.root if chief else run.path(f"workers/worker_{strategy.cluster_resolver.task_id}")
    os.makedirs(worker_dir, exist_ok=True)
    with strategy.scope():
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(worker_dir, "backup"), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
    train_iter = iter(strategy.experimental_distribute_dataset(train_ds))

    def train_step(x, y):
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            per_example = _per_example_loss(loss_fn, y, predictions)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def distributed_train_step(iterator):
        x, y = next(iterator)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(train_step, args=(x, y)), axis=None)

    @tf.function
    def distributed_eval_step(x, y):
        def step(x, y):
            predictions = model(x, training=False)
            for metric in metrics:
                metric.update_state(y, predictions)
        strategy.run(step, args=(x, y))

    csv_path = os.path.join(worker_dir, "history.csv")
    best = best_so_far(RunDir(worker_dir), monitor)  # survives a resume
    evaluation = _ScheduledEvaluation(evaluate, evaluate_every, epochs) if evaluate is not None else None
    for epoch in range(int(epoch_var.numpy()), epochs):
        start = time.perf_counter()
        total = 0.0
        for _ in range(steps_per_epoch):
            total += float(distributed_train_step(train_iter))
        train_loss = total / steps_per_epoch
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise NaNLossError(f"epoch {epoch + 1}: the loss became NaN; the last checkpoint is in "
                               f"{manager.directory}.")
        if ema:
            _swap_ema(model, optimizer)  # evaluate and checkpoint the EMA weights, as fit does
        row = {"epoch": epoch, "loss": train_loss, "train_seconds": train_seconds}
        if eval_ds is not None:
            for metric in metrics:
                metric.reset_state()
            for x, y in strategy.experimental_distribute_dataset(eval_ds.take(eval_steps)):
                distributed_eval_step(x, y)
            row.update({f"val_{m.name}": float(m.result()) for m in metrics})
        if evaluation is not None:
            row.update(evaluation(model, epoch))
        model.save_weights(os.path.join(worker_dir, "last.weights.h5"))
        if row[monitor] > best:
            best = row[monitor]
            model.save_weights(os.path.join(worker_dir, "best.weights.h5"))
        if ema:
            _swap_ema(model, optimizer)
        epoch_var.assign(epoch + 1)
        manager.save()
        new_file = not os.path.exists(csv_path)
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        print(f"Epoch {epoch + 1}/{epochs} - loss: {train_loss:.4f} - "
              + " - ".join(f"{k}: {v:.4f}" for k, v in row.items() if k.startswith("val_")), flush=True)
    if ema:
        optimizer.finalize_variable_values(model.trainable_variables)
    shutil.rmtree(manager.directory, ignore_errors=True)  # finished: like BackupAndRestore, drop the backup
    return model, read_history(RunDir(worker_dir))


def _per_example_loss(loss, y, predictions):
    """(B,) loss values: ``loss`` is a callable or a dict of them keyed like the
    model's outputs (summed); Keras ``Loss`` objects are called unreduced."""
    if isinstance(loss, dict):
        return tf.add_n([_per_example_loss(fn, y[key], predictions[key]) for key, fn in loss.items()])
    return loss.call(y, predictions) if isinstance(loss, keras.losses.Loss) else loss(y, predictions)


def _swap_ema(model, optimizer):
    """Exchange the weights and their EMA (what keras.callbacks.SwapEMAWeights does)."""
    for variable, average in zip(model.trainable_variables, optimizer._model_variables_moving_average):
        value = tf.identity(variable)
        variable.assign(average)
        average.assign(value)


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


def export_model(model, run):
    """``model.keras`` and a SavedModel (``model.export``) in the run directory."""
    model.save(run.path("model.keras"))
    model.export(run.path("saved_model"), verbose=False)


def write_metrics(run, metrics):
    with open(run.path("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
