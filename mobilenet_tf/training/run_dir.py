"""The run directory: creating it, ``--overwrite`` keeping the old run aside, the
resume checks, and history.csv (what every recipe's run directory holds is listed in
``mobilenet_tf.training.engine``).

``prepare_run_dir`` never destroys a run before its replacement is safe (the old one
waits in ``<output_dir>.previous``); ``open_run`` writes config.json once and refuses
to resume an interrupted run with changed settings (``check_resume``).
"""

import atexit
import csv
import dataclasses
import json
import math
import os
import shutil
import sys

import numpy as np

from mobilenet_tf.training import config as config_lib, strategy as strategy_lib


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
    (metrics.json), an epoch's backup (BackupAndRestore's or the multi-worker loop's
    CheckpointManager's), the FaceNet recipe's teacher or a teacher epoch."""
    backups = ("backup/training_metadata.json", "backup/training_metadata.json.bkp", "backup/checkpoint")
    names = ("metrics.json", "teacher/teacher.keras", *backups, *(f"teacher/{name}" for name in backups))
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
    ``settle_previous_run``) and put back if the new run ends before that (when the
    recipe's ``main`` returns or raises, at exit, or, after a kill, when the next run
    starts in ``output_dir``).

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
    "tflite", "saved_model", "calibration_images", "eval_every", "eval_batch_size", "display_threshold",
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
