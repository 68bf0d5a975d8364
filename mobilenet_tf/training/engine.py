"""The run loop every recipe shares: run directory, callbacks, fit, resume, export.

``run_training(...)`` builds the model under the strategy's scope, then trains with
``model.fit`` and stock Keras callbacks (BackupAndRestore, ModelCheckpoint,
TensorBoard, CSVLogger, TerminateOnNaN, SwapEMAWeights). Keras 3 ``fit`` fails
under MultiWorkerMirroredStrategy (keras-team/keras#20585), so there the same
contract is met by a custom loop (``strategy.run`` over a distributed dataset,
``tf.train.CheckpointManager`` for resume).

Run directory layout::

    config.json         the resolved config (written once; a resume must keep it, see check_resume)
    backup/             BackupAndRestore state, this epoch's and the previous one's
                        (double checkpointing; deleted when the run finishes)
    best.weights.h5     best validation top-1 (EMA weights when EMA is on)
    last.weights.h5     after the last epoch
    history.csv         one row per epoch (appended across resumes)
    logs/               TensorBoard
    metrics.json        final metrics; its presence marks a finished run
    curves.png          loss and accuracy per epoch
    model.keras         the final model; saved_model/ its SavedModel export

Safety: ``--overwrite`` keeps the replaced run in ``<output_dir>.previous`` until the
new run has saved an epoch (``prepare_run_dir``); a resume restores the newest
intact state and skips a checkpoint torn by a kill (``restore_training_state``);
a multi-worker run that loses a worker stops with ``WorkerLostError`` instead of
hanging (TensorFlow aborts the collectives when a peer's connection drops or the
coordination service misses its heartbeats).
"""

import atexit
import csv
import dataclasses
import glob
import json
import math
import os
import re
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


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def previous_run_path(output_dir):
    """Where ``--overwrite`` keeps the run it replaces: the sibling ``<output_dir>.previous``."""
    return os.path.normpath(output_dir) + ".previous"


def _has_saved_epoch(output_dir):
    """True once a run directory holds something worth keeping: a finished run
    (metrics.json) or an epoch's backup (BackupAndRestore's or the multi-worker
    loop's CheckpointManager's)."""
    names = ("metrics.json", "backup/training_metadata.json", "backup/training_metadata.json.bkp",
             "backup/checkpoint")
    return any(os.path.exists(os.path.join(output_dir, name)) for name in names)


def settle_previous_run(output_dir):
    """Resolve ``<output_dir>.previous`` (see ``prepare_run_dir``): delete it once the
    run in ``output_dir`` has saved an epoch (or finished); otherwise put it back in
    place of the unsaved new run. Does nothing when there is none."""
    previous = previous_run_path(output_dir)
    if not os.path.isdir(previous):
        return
    if _has_saved_epoch(output_dir):
        shutil.rmtree(previous, ignore_errors=True)
        print(f"Deleted the previous run in {previous} (replaced by --overwrite; this run has saved an epoch).",
              flush=True)
        return
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(previous, output_dir)
    _warn(f"the run that --overwrite started in {output_dir} stopped before saving an epoch; the previous run "
          f"is back in {output_dir}.")


def _run_exists(output_dir):
    return any(os.path.exists(os.path.join(output_dir, name)) for name in ("config.json", "metrics.json"))


def prepare_run_dir(output_dir, overwrite=False):
    """Create the run directory; refuse to replace a finished run unless ``overwrite``.

    No run is destroyed before its replacement is safe: ``overwrite`` moves a run
    already in ``output_dir`` (finished or interrupted) to ``<output_dir>.previous``;
    it is deleted once the new run has saved its first epoch (or finished, see
    ``settle_previous_run``) and put back if the new run ends before that (at exit,
    or, after a kill, when the next run starts in ``output_dir``).

    Raises:
        ValueError: ``output_dir`` holds a finished run (metrics.json) and
            ``overwrite`` is off.
    """
    settle_previous_run(output_dir)  # a replacement that was killed before its first epoch
    run = RunDir(output_dir)
    if os.path.exists(run.path("metrics.json")) and not overwrite:
        raise ValueError(
            f"{output_dir!r} holds a finished run (metrics.json exists); pass --overwrite to replace "
            "it or choose another --output-dir."
        )
    if overwrite and _run_exists(output_dir):
        previous = previous_run_path(output_dir)
        os.replace(output_dir, previous)
        atexit.register(settle_previous_run, output_dir)
        print(f"--overwrite: moved the run in {output_dir} to {previous}; it is deleted once this run saves its "
              "first epoch, and put back if this run stops before that.", flush=True)
    os.makedirs(output_dir, exist_ok=True)
    return run


# Config keys a resumed run may change: how it is distributed and logged, how long it
# runs, which extra outputs it writes, where its data lies. Everything else (model,
# data, batch, schedule, augmentation, seeds, precision) defines the checkpoint.
RESUMABLE_KEYS = frozenset({
    "verbose", "strategy", "num_cpu_devices", "sync_batchnorm", "jit_compile", "steps_per_execution",
    "epochs", "overwrite", "eval_only", "output_dir", "data_dir", "strict_data", "check_images",
    "tflite", "calibration_images", "eval_every", "eval_batch_size", "display_threshold",
})


def read_run_config(path):
    """A run's config.json as a dict; ``ValueError`` naming the file if it is unreadable."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} (the interrupted run's settings) cannot be read: {error}. Restore it, or pass --overwrite "
            "to start a new run in that directory, or choose another --output-dir."
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} must hold a JSON object of settings; got {type(saved).__name__}. Pass "
                         "--overwrite to start a new run in that directory.")
    return saved


def check_resume(saved, config, path):
    """Refuse to resume a run whose settings ``config`` changes.

    Rule: every key of the saved ``config.json`` (``path``) must keep its value,
    except the ``RESUMABLE_KEYS`` (distribution, logging, ``epochs`` to extend a
    run, extra outputs such as ``tflite``, data location, ``overwrite`` /
    ``eval_only``). Keys the saved file lacks (written by an older version) are
    not compared.

    Raises:
        ValueError: listing each differing key as ``key: old -> new`` and naming
            ``--overwrite``.
    """
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    changed = [f"{key}: {saved[key]!r} -> {value!r}" for key, value in sorted(new.items())
               if key in saved and key not in RESUMABLE_KEYS and saved[key] != value]
    if changed:
        raise ValueError(
            f"{os.path.dirname(path) or '.'!r} holds an interrupted run with other settings, so it cannot be "
            f"resumed with these flags ({'; '.join(changed)}). Rerun with the settings in {path} to resume it, "
            "pass --overwrite to start a new run there, or choose another --output-dir. (A resume may change "
            f"only: {', '.join(sorted(RESUMABLE_KEYS))}.)"
        )


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
    config.json is written once, when the run starts: a directory holding an
    interrupted run (config.json, no metrics.json) is resumed only when
    ``config`` keeps its settings (``check_resume``); ``--eval-only`` refuses it
    (it would mark the interrupted run finished).
    """
    chief = strategy_lib.is_chief(strategy)
    if not chief:
        return RunDir(config.output_dir), False
    run = prepare_run_dir(config.output_dir, config.overwrite)
    path = run.path("config.json")
    if os.path.exists(path):
        if getattr(config, "eval_only", False):
            raise ValueError(
                f"`--eval-only` into {config.output_dir!r}, which holds an interrupted training run: its "
                "metrics.json would mark that run finished. Choose another --output-dir (or pass --overwrite "
                "to replace the run)."
            )
        check_resume(read_run_config(path), config, path)
    else:
        config_lib.save_config(config, path)
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
    starts with ``data.BAD_DATA``), 1 when the loss became NaN or a worker was lost."""
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
    except (NaNLossError, WorkerLostError) as error:
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


class _Backup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore(double_checkpoint=True)`` (latest.weights.h5 and the previous
    epoch's latest.weights.h5.bkp, with their training_metadata.json) that always
    saves the *training* weights, even when ``SwapEMAWeights`` (``swap``) has put
    the EMA into the model, so it can run after every other callback. Restoring is
    ``restore_training_state``'s job (before ``fit``), not ``on_train_begin``'s."""

    def __init__(self, backup_dir, swap=None):
        super().__init__(backup_dir, double_checkpoint=True)
        self._swap = swap

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            return  # keep the last good backup (TerminateOnNaN stops the run)
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        # keras.callbacks.SwapEMAWeights keeps no public state; it swaps in place.
        swapped = self._swap is not None and self._swap._ema_weights_in_model
        if swapped:
            self._swap._swap_variables()
        try:
            super()._save_model()
        finally:
            if swapped:
                self._swap._swap_variables()


class _ReleasePrevious(keras.callbacks.Callback):
    """Deletes the run ``--overwrite`` set aside once this run's first epoch is backed up."""

    def __init__(self, run):
        super().__init__()
        self._run = run

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training:
            settle_previous_run(self._run.root)


def _callbacks(run, monitor, ema, extra=(), evaluate=None, evaluate_every=1, epochs=1):
    # The best score so far survives a resume (ModelCheckpoint alone would restart from -inf).
    best = best_so_far(run, monitor)
    callbacks = [keras.callbacks.TerminateOnNaN(), _EpochTimer()]
    swap = None
    if ema:
        # Swap in EMA weights for evaluation and for the checkpoints written at epoch end.
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        callbacks.append(swap)
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
    # The backup marks an epoch done, so it goes last: an epoch killed during its (possibly
    # long) evaluation or checkpointing is redone on resume, and history.csv never lags it.
    return [*callbacks, _Backup(run.path("backup"), swap), _ReleasePrevious(run)]


def _read_epoch(path):
    """The ``epoch`` in a BackupAndRestore training_metadata.json; ValueError naming the file."""
    try:
        with open(path) as f:
            epoch = json.load(f)["epoch"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(epoch, int):
        raise ValueError(f"{path} is unreadable (its epoch is {epoch!r}, not an integer)")
    return epoch


def _history_rows(run):
    """history.csv's rows keyed by epoch (the last row of an epoch wins)."""
    if not os.path.exists(run.path("history.csv")):
        return None, {}
    with open(run.path("history.csv"), newline="") as f:
        reader = csv.DictReader(f)
        rows = {}
        for row in reader:
            try:
                rows[int(float(row["epoch"]))] = row
            except (KeyError, TypeError, ValueError):
                continue
        return reader.fieldnames, rows


def _completed_epochs(run):
    """How many epochs history.csv records without a gap (0, 1, ..., n-1)."""
    _, rows = _history_rows(run)
    n = 0
    while n in rows:
        n += 1
    return n


def _truncate_history(run, epochs):
    """Keep history.csv's rows of epochs 0 .. epochs-1 (once each): rows of an epoch that
    is redone after a resume must not stay. No file when ``epochs`` is 0."""
    fields, rows = _history_rows(run)
    if fields is None:
        return
    kept = [rows[e] for e in range(epochs) if e in rows]
    if len(kept) == len(rows) and len(kept) == sum(1 for _ in open(run.path("history.csv"))) - 1:
        return
    if not kept:
        os.remove(run.path("history.csv"))
        return
    tmp = run.path("history.csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, run.path("history.csv"))


def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


def _load_weights(model, path):
    """``model.load_weights`` for any file name (Keras insists on ``.weights.h5``; the
    double checkpoint's previous copy is ``latest.weights.h5.bkp``)."""
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return
    copy = os.path.join(os.path.dirname(path), "restoring.weights.h5")
    shutil.copyfile(path, copy)
    try:
        model.load_weights(copy)
    finally:
        os.remove(copy)


def restore_training_state(model, run, steps_per_epoch, ema=False):
    """Load the newest intact training state into ``model`` (compiled, its optimizer
    built); returns the number of epochs it completed (0: a fresh start).

    Candidates, newest first: ``backup/latest.weights.h5``, the previous epoch's
    ``backup/latest.weights.h5.bkp`` (double checkpointing), then
    ``last.weights.h5`` (holding the EMA in the model when ``ema``); without a
    ``backup/`` directory (a new run, or one whose training finished) nothing is
    restored. A candidate's
    epoch is its optimizer step count / ``steps_per_epoch`` (checked against its
    training_metadata.json when that is readable); it is used only when history.csv
    records every epoch before it, and history.csv is cut back to it. A file that
    cannot be read (torn by a kill during its write) is skipped with a warning
    naming it.
    """
    backup = run.path("backup")
    latest = os.path.join(backup, "latest.weights.h5")
    metadata = os.path.join(backup, "training_metadata.json")
    candidates = [(latest, metadata, False), (latest + ".bkp", metadata + ".bkp", False),
                  (run.path("last.weights.h5"), None, ema)]
    if not os.path.isdir(backup):
        return 0  # a new run, or one whose training finished (BackupAndRestore deleted its backup)
    candidates = [c for c in candidates if os.path.exists(c[0])]
    recorded = _completed_epochs(run)
    variables = list(model.variables) + list(model.optimizer.variables)
    initial = _snapshot(variables)
    for weights_path, metadata_path, swapped in candidates:
        try:
            _load_weights(model, weights_path)
        except Exception as error:  # a torn h5 file raises OSError, KeyError or ValueError
            _warn(f"cannot restore from {weights_path} ({type(error).__name__}: {str(error)[:200]}); it is "
                  "damaged (likely a kill during its write). Trying an older checkpoint.")
            continue
        steps = int(model.optimizer.iterations.numpy())
        epoch, partial = divmod(steps, steps_per_epoch)
        if partial:
            _warn(f"{weights_path} is at step {steps}, not at the end of an epoch of {steps_per_epoch} steps; "
                  "not resuming from it.")
            continue
        if metadata_path is not None and os.path.exists(metadata_path):
            try:
                if _read_epoch(metadata_path) != epoch:
                    _warn(f"{metadata_path} says epoch {_read_epoch(metadata_path)} but {weights_path} is at "
                          f"the end of epoch {epoch} ({steps} steps); using {epoch}.")
            except ValueError as error:
                _warn(f"{error}; using the epoch count of {weights_path}'s optimizer steps ({epoch}).")
        if epoch > recorded:
            _warn(f"{weights_path} is at epoch {epoch} but {run.path('history.csv')} records {recorded} epochs; "
                  "not resuming from it.")
            continue
        if swapped:
            _swap_ema(model, model.optimizer)
        if weights_path != latest:
            _warn(f"resuming from {weights_path} (epoch {epoch}).")
        _truncate_history(run, epoch)
        return epoch
    _assign(variables, initial)
    _warn(f"no intact checkpoint in {run.root}; training starts again from epoch 0 (history.csv is cleared).")
    _truncate_history(run, 0)
    return 0


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
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    initial_epoch = restore_training_state(model, run, steps_per_epoch, ema)
    history = model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                        validation_data=eval_ds,
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


def _custom_loop(model, optimizer, loss_fn, metrics, train_ds, eval_ds, epochs, steps_per_epoch, eval_steps,
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
            raise NaNLossError(f"epoch {epoch + 1}: the loss became NaN; the last checkpoint is in "
                               f"{manager.directory}.")
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
    shutil.rmtree(manager.directory, ignore_errors=True)  # finished: like BackupAndRestore, drop the backup
    return model, read_history(worker_run)


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
    """metrics.json, which marks the run finished (and releases the run ``--overwrite`` set aside)."""
    with open(run.path("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    settle_previous_run(run.root)
