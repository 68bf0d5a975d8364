"""The fit path: ``run_training`` with ``model.fit`` and stock Keras callbacks
(BackupAndRestore, ModelCheckpoint, TensorBoard, CSVLogger, TerminateOnNaN,
SwapEMAWeights), resuming from the newest intact backup (``restore_training_state``).
Under MultiWorkerMirroredStrategy it hands over to ``multi_worker.custom_loop``
(Keras 3 ``fit`` fails there, keras-team/keras#20585).

The options every recipe passes alike (XLA, steps per execution, SyncBN, Keras
verbosity) travel as one ``FitOptions``, or as the recipe's config itself (any
object with those fields, e.g. a ``RunOptions`` subclass).
"""

import dataclasses
import glob
import json
import math
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from mobilenet_tf._keras import keras
from mobilenet_tf.training import config as config_lib, schedules
from mobilenet_tf.training.run_dir import (_completed_epochs, _truncate_history, _warn, best_so_far, read_history,
                                           settle_previous_run)


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """The fit options every recipe shares (the ``RunOptions`` flags of the same names).

    ``verbose`` is Keras' (0, 1, 2 or "auto"); ``from_config`` turns the
    ``--verbose`` flag into it (``config.keras_verbose``).
    """

    jit_compile: bool = False
    steps_per_execution: int = 1
    sync_batchnorm: bool = True
    verbose: object = "auto"

    @classmethod
    def from_config(cls, config, **overrides):
        """The options of a recipe's config (fields it lacks keep their defaults);
        ``overrides`` replace single ones."""
        if isinstance(config, cls):
            return dataclasses.replace(config, **overrides)
        values = {field.name: getattr(config, field.name) for field in dataclasses.fields(cls)
                  if hasattr(config, field.name)}
        if isinstance(values.get("verbose"), str):
            values["verbose"] = config_lib.keras_verbose(values["verbose"])
        values.update(overrides)
        return cls(**values)


class NaNLossError(RuntimeError):
    pass


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
    """``evaluate(model)`` every ``every``-th epoch and on the last; other epochs give
    NaN for its keys (never "best", gaps in the curves). The keys are
    ``evaluate.result_keys`` where it names them, else learnt by evaluating the first
    epoch of the process too. Returns the results as ``val_<key>``; used by both
    training loops."""

    def __init__(self, evaluate, every, epochs):
        self._evaluate, self._every, self._epochs = evaluate, every, epochs
        keys = getattr(evaluate, "result_keys", None)
        self._keys = list(keys) if keys is not None else None

    def __call__(self, model, epoch):
        if self._keys is None or (epoch + 1) % self._every == 0 or epoch + 1 == self._epochs:
            results = self._evaluate(model)
            self._keys = list(results)
        else:
            results = {key: float("nan") for key in self._keys}
        return {f"val_{key}": value for key, value in results.items()}


def _finite_loss(logs):
    """False when the epoch's loss is NaN or infinite (TerminateOnNaN then stops the run)."""
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(loss)


class _Evaluate(keras.callbacks.Callback):
    """Adds the scheduled evaluation's ``val_<key>`` results to the epoch's logs,
    before the checkpoint and CSV callbacks read them; an epoch whose loss is not
    finite is not evaluated (the run stops)."""

    def __init__(self, evaluation):
        super().__init__()
        self._evaluation = evaluation

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and _finite_loss(logs):
            logs.update(self._evaluation(self.model, epoch))


class _WeightsFiles:
    """Writes the epoch-end weights files (best and last checkpoints, the backup) with
    one ``save_weights`` per set of weights: they hold the same variables (model and
    optimizer) whenever the same weights are in the model, so a file already written at
    this training step with the EMA swapped in or out alike is copied instead (a save
    walks every layer: about 0.4 s a file in the V3-Small learning tests, three files an
    epoch)."""

    def __init__(self, swap=None):
        self._swap = swap
        self._written = None  # ((step, EMA in the model), path)

    def save(self, model, path, training_weights=False):
        """``training_weights``: the caller swapped the EMA out itself (the backup; the
        swap callback's flag still says it is in)."""
        optimizer = getattr(model, "optimizer", None)  # (none before compile)
        step = None if optimizer is None else int(optimizer.iterations.numpy())
        state = (step, self._swap is not None and self._swap._ema_weights_in_model and not training_weights)
        if step is not None and self._written and self._written[0] == state and os.path.exists(self._written[1]):
            shutil.copyfile(self._written[1], path)
        else:
            model.save_weights(path, overwrite=True)
            self._written = (state, path)


class _Checkpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` of weights (per epoch, written by ``files``) that keeps the
    previous file when the epoch's loss is not finite (last.weights.h5 stays the last
    good epoch's weights) and, for the best file, when the monitored value is NaN (an
    epoch the scheduled evaluation skipped: Keras would save it as the first "best" and
    then never beat NaN)."""

    def __init__(self, filepath, files, **kwargs):
        super().__init__(filepath, save_weights_only=True, **kwargs)
        self._files = files

    def on_epoch_end(self, epoch, logs=None):
        monitored = (logs or {}).get(self.monitor)
        skipped = self.save_best_only and isinstance(monitored, (float, np.floating)) and math.isnan(monitored)
        if _finite_loss(logs) and not skipped:
            super().on_epoch_end(epoch, logs)

    def _save_model(self, epoch, batch, logs):
        path = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, path):
            self._files.save(self.model, path)


class _Backup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore(double_checkpoint=True)`` (latest.weights.h5 and the previous
    epoch's latest.weights.h5.bkp, with their training_metadata.json) that always
    saves the *training* weights, even when ``SwapEMAWeights`` (``swap``) has put
    the EMA into the model, so it can run after every other callback. Restoring is
    ``restore_training_state``'s job (before ``fit``), not ``on_train_begin``'s.

    The backup outlives ``fit``: a run killed after its last epoch but before its
    outputs (metrics.json) resumes at the end instead of training again, and a run
    stopped by a NaN loss keeps its last good epoch. ``finish_training`` deletes it
    once the run's outputs are written."""

    def __init__(self, backup_dir, files, swap=None):
        super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)
        self._files = files
        self._swap = swap

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        if _finite_loss(logs):  # else keep the last good backup (TerminateOnNaN stops the run)
            super().on_epoch_end(epoch, logs)

    def _save_model(self):
        # BackupAndRestore._save_model's files (the double checkpoint's previous copies,
        # then the weights and training_metadata.json), the weights through ``files``.
        # keras.callbacks.SwapEMAWeights keeps no public state; it swaps in place.
        swapped = self._swap is not None and self._swap._ema_weights_in_model
        if swapped:
            self._swap._swap_variables()
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
            for path, previous in ((self._weights_path, self._prev_weights_path),
                                   (self._training_metadata_path, self._prev_training_metadata_path)):
                if os.path.exists(path):
                    shutil.copyfile(path, previous)
            self._files.save(self.model, self._weights_path, training_weights=True)
            with open(self._training_metadata_path, "w") as f:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
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
    files = _WeightsFiles(swap)
    callbacks += [
        _Checkpoint(run.path("last.weights.h5"), files),  # (first: the best file may be its copy)
        _Checkpoint(run.path("best.weights.h5"), files, monitor=monitor, mode="max", save_best_only=True,
                    initial_value_threshold=None if best == -np.inf else best),
        keras.callbacks.CSVLogger(run.path("history.csv"), append=True),
        keras.callbacks.TensorBoard(run.path("logs")),
        *extra,
    ]
    # The backup marks an epoch done, so it goes last: an epoch killed during its (possibly
    # long) evaluation or checkpointing is redone on resume, and history.csv never lags it.
    return [*callbacks, _Backup(run.path("backup"), files, swap), _ReleasePrevious(run)]


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


def _intact_h5(path):
    """True when every dataset of the HDF5 file ``path`` reads back (a kill during the
    write leaves a file h5py cannot open or read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    except Exception:  # OSError, KeyError, RuntimeError ... from a torn file
        return False
    return True


def finish_training(run):
    """Delete the run's training backups (``backup/``, the FaceNet teacher's and other
    workers' ones) once its outputs are written: the run is finished (metrics.json)."""
    for pattern in ("backup", "*/backup", "workers/*/backup"):
        for path in glob.glob(run.path(pattern)):
            shutil.rmtree(path, ignore_errors=True)


def restore_training_state(model, run, steps_per_epoch, ema=False):
    """Load the newest intact training state into ``model`` (compiled, its optimizer
    built); returns the number of epochs it completed (0: a fresh start).

    Candidates, newest first: ``backup/latest.weights.h5``, the previous epoch's
    ``backup/latest.weights.h5.bkp`` (double checkpointing), then
    ``last.weights.h5`` (holding the EMA in the model when ``ema``); without a
    ``backup/`` directory (a new run) nothing is restored; ``run_training`` creates
    ``backup/`` before the first epoch, so a run killed before its first backup
    restarts at epoch 0 with history.csv cleared, and keeps it until the run's
    outputs are written (``finish_training``). A candidate's epoch is its optimizer
    step count / ``steps_per_epoch`` (checked against its training_metadata.json when
    that is readable); it is used only when history.csv records every epoch before
    it, and history.csv is cut back to it. A file that cannot be read (torn by a
    kill during its write) is skipped with a warning naming it.

    Raises:
        ValueError: an intact checkpoint does not fit ``model`` (other layers or
            shapes), or stops inside an epoch of ``steps_per_epoch`` steps (the
            training data or ``--steps-per-epoch`` changed): resuming from it would
            be wrong and restarting would throw its epochs away.
    """
    backup = run.path("backup")
    latest = os.path.join(backup, "latest.weights.h5")
    metadata = os.path.join(backup, "training_metadata.json")
    candidates = [(latest, metadata, False), (latest + ".bkp", metadata + ".bkp", False),
                  (run.path("last.weights.h5"), None, ema)]
    if not os.path.isdir(backup):
        return 0  # a new run
    candidates = [c for c in candidates if os.path.exists(c[0])]
    recorded = _completed_epochs(run)
    variables = list(model.variables) + list(model.optimizer.variables)
    initial = _snapshot(variables)
    for weights_path, metadata_path, swapped in candidates:
        if not _intact_h5(weights_path):
            _warn(f"cannot restore from {weights_path}: it is damaged (likely a kill during its write). Trying "
                  "an older checkpoint.")
            continue
        try:
            _load_weights(model, weights_path)
        except Exception as error:  # an intact file that does not fit the model
            raise ValueError(
                f"{weights_path} (the interrupted run's checkpoint) does not fit the model these settings build "
                f"({type(error).__name__}: {str(error)[:300]}). Rerun the version and settings that started the "
                f"run to resume it, or pass --overwrite to start a new run in {run.root!r}.") from None
        steps = int(model.optimizer.iterations.numpy())
        epoch, partial = divmod(steps, steps_per_epoch)
        if partial:
            raise ValueError(
                f"{weights_path} (the interrupted run's checkpoint) is at step {steps}, not at the end of an epoch "
                f"of {steps_per_epoch} steps: the number of training examples or --steps-per-epoch changed since "
                f"the run started. Resume with the same data and flags, or pass --overwrite to start a new run in "
                f"{run.root!r}.")
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


def nan_message(epoch, run):
    """What to do after the loss became NaN in (1-based) ``epoch``; the run's files
    hold the last good epoch (``epoch - 1``)."""
    if epoch <= 1:
        kept = "no epoch finished, so nothing was saved"
    else:
        kept = (f"the last good epoch ({epoch - 1}) is kept: its weights in {run.path('last.weights.h5')}, its "
                f"training state in {run.path('backup')}")
    return (f"training stopped in epoch {epoch}: the loss became NaN; {kept}. Lower the learning rate (with "
            "--overwrite or another --output-dir) or check the data; a rerun with the same flags resumes from "
            "the last good epoch.")


def run_training(
    *, build, train_ds, eval_ds, epochs, steps_per_epoch, eval_steps, run, strategy,
    global_batch_size, options=None, monitor="val_top1", ema=False, callbacks=(), evaluate=None,
    evaluate_every=1, **fit_options,
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
        options: the shared fit options: a ``FitOptions``, or a recipe's config
            (its jit_compile, steps_per_execution, sync_batchnorm and verbose flags;
            ``FitOptions.from_config``); None: the defaults. ``sync_batchnorm``:
            with several replicas, all-reduce BatchNormalization statistics
            (SyncBN), so every replica and worker keeps the same moving
            statistics; without it workers end with different ones.
        **fit_options: single ``FitOptions`` fields overriding ``options``
            (e.g. ``verbose=0``).
        ema: the optimizer keeps a weight EMA; evaluate and checkpoint it.
        callbacks: more Keras callbacks for ``fit`` (not used by the multi-worker loop).
        evaluate: optional ``model -> {name: float}`` run after every epoch (on
            the EMA weights when ``ema``); its results join the history as
            ``val_<name>`` and may be the ``monitor``. For metrics a Keras metric
            cannot compute on a batch: full-resolution mIoU, COCO mAP, LFW
            verification.
        evaluate_every: run ``evaluate`` every N epochs and on the last (and on
            the first of a process, unless ``evaluate.result_keys`` names its
            keys); other epochs log NaN for its keys.

    Raises:
        NaNLossError: the loss became NaN (the last good checkpoint stays on disk).
    """
    options = FitOptions.from_config(options, **fit_options) if options is not None else FitOptions(**fit_options)
    with strategy.scope():
        model, optimizer, loss, metrics = build()
    if options.sync_batchnorm and strategy.num_replicas_in_sync > 1:
        schedules.configure_batchnorm(model, synchronized=True)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        from mobilenet_tf.training import multi_worker

        return multi_worker.custom_loop(model, optimizer, loss, metrics, train_ds, eval_ds, epochs, steps_per_epoch,
                            eval_steps, run, strategy, global_batch_size, monitor, ema, evaluate, evaluate_every)
    with strategy.scope():
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=options.jit_compile,
                      steps_per_execution=options.steps_per_execution)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    # Restore first: a checkpoint that does not fit these settings is refused with its
    # own message before the data's shapes are checked against the model.
    initial_epoch = restore_training_state(model, run, steps_per_epoch, ema)
    with strategy.scope():
        build_compiled_state(model, train_ds)
    # backup/ exists from now until training finishes: a kill before the first epoch's
    # backup (history.csv may already have its row) then resumes through it, from epoch 0.
    os.makedirs(run.path("backup"), exist_ok=True)
    history = model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                        validation_data=eval_ds,
                        validation_steps=eval_steps if eval_ds is not None else None,
                        callbacks=_callbacks(run, monitor, ema, callbacks, evaluate, evaluate_every, epochs),
                        verbose=options.verbose)
    losses = history.history.get("loss", [])
    if model.stop_training and losses and not math.isfinite(losses[-1]):
        raise NaNLossError(nan_message(initial_epoch + len(losses), run))
    return model, read_history(run)


def build_compiled_state(model, dataset):
    """Create the compiled loss and metric variables from ``dataset``'s element spec
    before ``fit`` traces its train function.

    Keras builds them up front only under a distribution strategy's scope; on the
    default strategy they are created inside the first trace, and TensorFlow then
    traces the train function a second time to run it without creating variables
    (for the SSDLite recipe about a third of its first epoch).
    Uses ``Trainer._symbolic_build`` (the method Keras' own ``fit`` calls under a
    strategy); a Keras without it keeps the lazy build."""
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=dataset.element_spec)


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
