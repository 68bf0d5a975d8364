"""The multi-worker custom loop: the fit path's contract (checkpoints, history.csv,
resume, best/last weights) under MultiWorkerMirroredStrategy, where Keras 3 ``fit``
fails (keras-team/keras#20585): ``strategy.run`` over a distributed dataset and a
``tf.train.CheckpointManager`` per worker. A worker lost mid-run raises
``WorkerLostError`` instead of hanging.
"""

import csv
import glob
import math
import os
import re
import time

import tensorflow as tf

from mobilenet_tf.training import strategy as strategy_lib
from mobilenet_tf.training.fit import (NaNLossError, _assign, _per_example_loss, _ScheduledEvaluation, _snapshot,
                                      _swap_ema, nan_message)
from mobilenet_tf.training.run_dir import (RunDir, _completed_epochs, _truncate_history, _warn, best_so_far,
                                           read_history, settle_previous_run)


class WorkerLostError(RuntimeError):
    """A multi-worker run lost a worker (its collectives failed)."""


def _lost_worker_message(error, backup_dir, epoch):
    peers = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", str(error))))
    who = " and ".join(peers) if peers else "a worker"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "aborted by" in line), lines[0] if lines else "")
    return (f"lost contact with {who} during epoch {epoch + 1} ({type(error).__name__}: {detail[:200]}). "
            "Multi-worker training "
            "cannot continue without it: restart every worker with the same flags and TF_CONFIG; they resume "
            f"from the last completed epoch ({epoch}) saved in {backup_dir}.")


def _checkpoint_candidates(directory):
    """(epoch, prefix) of the ``ckpt-<epoch>`` checkpoints in ``directory``, newest first
    (read from the files, so a garbled ``checkpoint`` state file does not hide them)."""
    found = []
    for index in glob.glob(os.path.join(directory, "ckpt-*.index")):
        prefix = index[:-len(".index")]
        number = prefix.rsplit("-", 1)[1]
        if number.isdigit():
            found.append((int(number), prefix))
    return sorted(found, reverse=True)


def _restore_checkpoint(checkpoint, epoch_var, directory, recorded):
    """Restore the newest intact ``ckpt-<epoch>`` with ``epoch <= recorded``; its epoch, or 0."""
    for epoch, prefix in _checkpoint_candidates(directory):
        if epoch > recorded:
            _warn(f"{prefix} is at epoch {epoch} but history.csv records {recorded} epochs; not resuming from it.")
            continue
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as error:  # torn files: DataLossError, NotFoundError, OutOfRangeError, ...
            _warn(f"cannot restore from {prefix} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                  "it is damaged (likely a kill during its write). Trying an older checkpoint.")
            continue
        if int(epoch_var.numpy()) != epoch:
            _warn(f"{prefix} holds epoch {int(epoch_var.numpy())}, not {epoch}; not resuming from it.")
            continue
        return epoch
    return 0


def _agree(strategy, value):
    """The smallest ``value`` over all workers (an all-gather)."""
    values = strategy.gather(strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value], tf.int64)), axis=0)
    return int(tf.reduce_min(values))


def custom_loop(model, optimizer, loss_fn, metrics, train_ds, eval_ds, epochs, steps_per_epoch, eval_steps,
                 run, strategy, global_batch_size, monitor, ema, evaluate, evaluate_every):
    """The multi-worker path: same outputs as ``fit`` (checkpoints, history, resume).

    Every worker keeps its last two epochs as ``tf.train.Checkpoint`` s (``backup/ckpt-<epoch>``);
    on a restart each restores its newest intact one (a torn one is skipped with a
    warning), then all agree on the smallest epoch so they continue from the same
    state. A lost worker (its collectives fail) raises ``WorkerLostError``.
    """
    chief = strategy_lib.is_chief(strategy)
    worker_dir = run.root if chief else run.path(f"workers/worker_{strategy.cluster_resolver.task_id}")
    os.makedirs(worker_dir, exist_ok=True)
    backup_dir = os.path.join(worker_dir, "backup")
    with strategy.scope():
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    worker_run = RunDir(worker_dir)
    variables = list(model.variables) + list(optimizer.variables) + [epoch_var]
    initial = _snapshot(variables)
    recorded = _completed_epochs(worker_run)
    local = _restore_checkpoint(checkpoint, epoch_var, backup_dir, recorded)
    start_epoch = _agree(strategy, local)
    if start_epoch != local:
        prefix = os.path.join(backup_dir, f"ckpt-{start_epoch}")
        if start_epoch == 0:
            _assign(variables, initial)
        else:
            try:
                checkpoint.restore(prefix).assert_existing_objects_matched()
            except Exception as error:
                raise RuntimeError(
                    f"another worker resumes from epoch {start_epoch} but {prefix} cannot be restored "
                    f"({type(error).__name__}); restart every worker with --overwrite to start over.") from error
        _warn(f"resuming from epoch {start_epoch}, the last epoch every worker saved.")
    elif (local or recorded) and local == 0:
        _assign(variables, initial)
        _warn(f"no intact checkpoint in {backup_dir}; training starts again from epoch 0 (history.csv is cleared).")
    _truncate_history(worker_run, start_epoch)
    try:
        manager = tf.train.CheckpointManager(checkpoint, backup_dir, max_to_keep=2)
    except Exception as error:  # a garbled `checkpoint` state file
        state = os.path.join(backup_dir, "checkpoint")
        _warn(f"{state} is unreadable ({type(error).__name__}); replacing it.")
        os.remove(state)
        manager = tf.train.CheckpointManager(checkpoint, backup_dir, max_to_keep=2)
    train_iter = iter(strategy.experimental_distribute_dataset(train_ds))

    def train_step(x, y):
        with tf.GradientTape() as tape:
            if hasattr(model, "compute_training_losses"):  # a model with its own losses (Faster R-CNN)
                losses = model.compute_training_losses(x, y)  # this replica's means: summed over replicas
                loss = tf.add_n(list(losses.values())) / strategy.num_replicas_in_sync
            else:
                per_example = _per_example_loss(loss_fn, y, model(x, training=True))
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
    best = best_so_far(worker_run, monitor)  # survives a resume
    evaluation = _ScheduledEvaluation(evaluate, evaluate_every, epochs) if evaluate is not None else None
    for epoch in range(start_epoch, epochs):
        start = time.perf_counter()
        total = 0.0
        try:
            for _ in range(steps_per_epoch):
                total += float(distributed_train_step(train_iter))
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError) as error:
            raise WorkerLostError(_lost_worker_message(error, backup_dir, epoch)) from None
        train_loss = total / steps_per_epoch
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise NaNLossError(nan_message(epoch + 1, worker_run))
        if ema:
            _swap_ema(model, optimizer)  # evaluate and checkpoint the EMA weights, as fit does
        row = {"epoch": epoch, "loss": train_loss, "train_seconds": train_seconds}
        try:
            if eval_ds is not None:
                for metric in metrics:
                    metric.reset_state()
                for x, y in strategy.experimental_distribute_dataset(eval_ds.take(eval_steps)):
                    distributed_eval_step(x, y)
                row.update({f"val_{m.name}": float(m.result()) for m in metrics})
            if evaluation is not None:
                row.update(evaluation(model, epoch))
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError) as error:
            raise WorkerLostError(_lost_worker_message(error, backup_dir, epoch)) from None
        model.save_weights(os.path.join(worker_dir, "last.weights.h5"))
        if row[monitor] > best:
            best = row[monitor]
            model.save_weights(os.path.join(worker_dir, "best.weights.h5"))
        if ema:
            _swap_ema(model, optimizer)
        new_file = not os.path.exists(csv_path)
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        # The checkpoint marks the epoch done, after history.csv has its row (as with fit).
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
        if chief:
            settle_previous_run(run.root)
        print(f"Epoch {epoch + 1}/{epochs} - loss: {train_loss:.4f} - "
              + " - ".join(f"{k}: {v:.4f}" for k, v in row.items() if k.startswith("val_")), flush=True)
    if ema:
        optimizer.finalize_variable_values(model.trainable_variables)
    # backup/ stays until the run's outputs are written (``fit.finish_training``).
    return model, read_history(worker_run)
