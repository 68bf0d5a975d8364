"""The run loop every recipe shares: run directory, callbacks, fit, resume, export.

This module keeps the engine's public names in one place; the code lives by concern:
``run_dir`` (prepare / open / resume checks / ``--overwrite`` aside, history.csv),
``fit`` (callbacks, ``run_training``, ``FitOptions``), ``multi_worker`` (the custom
loop), ``reports`` (throughput, plots, ``write_metrics``, ``export_model``),
``strategy.setup`` and ``recipe`` (the recipe skeleton, ``recipe_main``).

``run_training(...)`` (``fit``) builds the model under the strategy's scope, then trains with
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

from mobilenet_tf.training.fit import (  # noqa: F401
    FitOptions, NaNLossError, finish_training, restore_training_state, run_training,
)
from mobilenet_tf.training.multi_worker import WorkerLostError  # noqa: F401
from mobilenet_tf.training.reports import export_model, plot_history, throughput, write_metrics  # noqa: F401
from mobilenet_tf.training.run_dir import (  # noqa: F401
    RESUMABLE_KEYS, RunDir, best_so_far, check_resume, open_run,
    prepare_run_dir, previous_run_path, read_history, read_run_config, settle_previous_run,
)
from mobilenet_tf.training.strategy import setup  # noqa: F401


def recipe_main(main, config_cls, argv=None):
    """A recipe's ``__main__`` (see ``recipe.recipe_main``)."""
    from mobilenet_tf.training import recipe

    return recipe.recipe_main(main, config_cls, argv)
