"""Resuming and replacing runs safely: torn backups, changed flags, --overwrite, lost workers."""

import dataclasses
import json
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

import keras
from mobilenet_tf.training import config as config_lib, engine, fit

from conftest import h5_arrays, read_metrics, run_recipe_in_process, run_script
from test_recipe_imagenet import TINY, _free_ports

STEPS = 4


class Interrupted(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    """Stands in for a kill between two epochs."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        RAN.append(epoch)
        if epoch == self.epoch:
            raise Interrupted


RAN = []  # the epochs the last train() call started


class PoisonAt(keras.callbacks.Callback):
    """Stands in for a diverging run: the kernel becomes NaN when ``epoch`` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.layers[-1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def train(run_dir, epochs=3, stop_at=None, ema=False, steps=STEPS, units=2, poison_at=None):
    """A tiny regression through ``engine.run_training``; every epoch sees the same four
    batches in the same order, so a resumed run must end where an uninterrupted one does."""
    keras.utils.set_random_seed(0)

    def build():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9, use_ema=ema, ema_momentum=0.5)
        return model, optimizer, keras.losses.MeanSquaredError(reduction=None), []

    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    train_ds = tf.data.Dataset.from_tensor_slices((x, x[:, :2] * 2 - x[:, 2:])).batch(8).repeat()
    run = engine.prepare_run_dir(str(run_dir))
    RAN.clear()
    try:
        model, history = engine.run_training(
            build=build, train_ds=train_ds, eval_ds=None, evaluate=lambda model: {"score": 0.5},
            monitor="val_score", epochs=epochs, steps_per_epoch=steps, eval_steps=None, run=run,
            strategy=tf.distribute.get_strategy(), global_batch_size=8, verbose=0, ema=ema,
            callbacks=[StopAt(stop_at), PoisonAt(poison_at)])
    except Interrupted:
        return None, None
    return [w.copy() for w in model.get_weights()], history


def damage(path, how):
    if how == "truncate":  # a kill during the write of an h5 file
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:  # a garbled JSON file
        path.write_bytes(b'{"epoch": 2, "ba\x01tch": 0}')


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights after 3 uninterrupted epochs, without and with EMA."""
    return {ema: train(tmp_path_factory.mktemp("ref") / "run", ema=ema)[0] for ema in (False, True)}


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("damaged, resumed_from, named", [
    (["backup/latest.weights.h5"], 1, "latest.weights.h5"),  # back to the previous epoch's .bkp
    (["backup/training_metadata.json"], 2, "training_metadata.json"),  # epoch from the weights' steps
    (["backup/latest.weights.h5", "backup/latest.weights.h5.bkp"], 2, "latest.weights.h5.bkp"),  # last.weights
    (["backup/latest.weights.h5", "backup/latest.weights.h5.bkp", "last.weights.h5"], 0, "last.weights.h5"),
])
def test_torn_backup_resumes_from_the_newest_intact_state(tmp_path, capsys, reference, ema, damaged,
                                                          resumed_from, named):
    run_dir = tmp_path / "run"
    assert train(run_dir, stop_at=2, ema=ema) == (None, None) and RAN == [0, 1, 2]  # 2 of 3 done, "killed"
    assert (run_dir / "backup" / "latest.weights.h5.bkp").exists()  # double checkpointing
    for name in damaged:
        damage(run_dir / name, "garble" if name.endswith(".json") else "truncate")
    capsys.readouterr()
    weights, history = train(run_dir, ema=ema)
    err = capsys.readouterr().err
    assert named in err, err
    assert RAN == list(range(resumed_from, 3))
    if resumed_from == 0:
        assert "starts again from epoch 0" in err
    # History continuous: each epoch once, none lost, the redone ones replaced.
    assert len(history["loss"]) == 3
    epochs = [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]
    # Resumed (not restarted unless nothing was intact) and ended where an uninterrupted run ends.
    for got, want in zip(weights, reference[ema]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The backup stays until the run's outputs are written, then finish_training drops it.
    assert (run_dir / "backup" / "latest.weights.h5").exists()
    fit.finish_training(engine.RunDir(str(run_dir)))
    assert not (run_dir / "backup").exists()


@pytest.mark.parametrize("ema", [False, True])
def test_killed_after_training_before_its_outputs_resumes_at_the_end(tmp_path, reference, ema):
    run_dir = tmp_path / "run"
    train(run_dir, ema=ema)  # all 3 epochs, then "killed" before metrics.json
    weights, history = train(run_dir, ema=ema)
    assert RAN == []  # nothing trained again
    assert len(history["loss"]) == 3 and len((run_dir / "history.csv").read_text().splitlines()) == 4
    for got, want in zip(weights, reference[ema]):  # the final (EMA) weights, as after the first run
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nan_loss_keeps_the_last_good_epoch_and_a_rerun_resumes_from_it(tmp_path, reference):
    run_dir = tmp_path / "run"
    with pytest.raises(fit.NaNLossError) as error:
        train(run_dir, poison_at=2)
    message = str(error.value)
    assert "stopped in epoch 3" in message and "last good epoch (2)" in message, message
    assert RAN == [0, 1, 2]
    # Neither the NaN epoch's weights nor its evaluation were saved; the backup survives.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.load_weights(run_dir / "last.weights.h5")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert (run_dir / "backup" / "latest.weights.h5").exists()
    # Rerun (the cause fixed): it resumes at epoch 2 and ends where an uninterrupted run ends.
    weights, history = train(run_dir)
    assert RAN == [2] and len(history["loss"]) == 3
    for got, want in zip(weights, reference[False]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nan_in_the_first_epoch_says_nothing_was_saved(tmp_path):
    with pytest.raises(fit.NaNLossError, match="stopped in epoch 1: .*no epoch finished"):
        train(tmp_path / "run", poison_at=0)
    assert not (tmp_path / "run" / "last.weights.h5").exists()


@pytest.mark.parametrize("change, message", [
    (dict(steps=3), "is at step 8, not at the end of an epoch of 3 steps"),
    (dict(units=3), "does not fit the model these settings build"),
])
def test_resume_that_cannot_fit_the_checkpoint_is_refused_and_keeps_it(tmp_path, change, message):
    run_dir = tmp_path / "run"
    train(run_dir, stop_at=2)
    with pytest.raises(ValueError, match=message) as error:
        train(run_dir, **change)
    assert "--overwrite" in str(error.value)
    assert (run_dir / "backup" / "latest.weights.h5").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3  # epochs 0 and 1 kept


@dataclasses.dataclass
class Toy(config_lib.RunOptions):
    model: str = "v3_small"
    alpha: float = 0.35
    epochs: int = 3
    tflite: str = ""
    output_dir: str = ""


def test_resume_with_other_flags_is_refused_and_config_json_kept(tmp_path):
    strategy = tf.distribute.get_strategy()
    run_dir = str(tmp_path / "run")
    engine.open_run(Toy(output_dir=run_dir), strategy)
    saved = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError) as error:
        engine.open_run(Toy(output_dir=run_dir, model="v1", alpha=0.25, epochs=9), strategy)
    message = str(error.value)
    assert "alpha: 0.35 -> 0.25" in message and "model: 'v3_small' -> 'v1'" in message, message
    assert "epochs" not in message.split("(A resume")[0] and "--overwrite" in message
    assert (tmp_path / "run" / "config.json").read_text() == saved
    # Extending the run, other outputs, other logging or distribution: a resume.
    engine.open_run(Toy(output_dir=run_dir, epochs=9, tflite="int8", verbose="0", strategy="mirrored"), strategy)
    assert (tmp_path / "run" / "config.json").read_text() == saved
    # --eval-only would mark the interrupted run finished.
    with pytest.raises(ValueError, match="--eval-only.*interrupted training run"):
        engine.open_run(Toy(output_dir=run_dir, eval_only=True), strategy)
    # A garbled config.json is named.
    (tmp_path / "run" / "config.json").write_text('{"model": "v3_small",')
    with pytest.raises(ValueError, match=r"run/config.json \(the interrupted run's settings\) cannot be read"):
        engine.open_run(Toy(output_dir=run_dir), strategy)
    # --overwrite starts over; the old run waits aside until the new one saves an epoch.
    engine.open_run(Toy(output_dir=run_dir, model="v1", overwrite=True), strategy)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "v1"
    assert (tmp_path / "run.previous" / "config.json").exists()
    engine.settle_previous_run(run_dir)  # the new run saved nothing: the old one comes back
    assert not (tmp_path / "run.previous").exists()
    assert (tmp_path / "run" / "config.json").read_text().startswith('{"model": "v3_small",')


def recipe(*args, **kwargs):
    return run_script("recipes/imagenet.py", *args, **kwargs)


def in_process(*args):
    """The recipe's command line in this process: no interpreter and TensorFlow start-up."""
    return run_recipe_in_process("recipes/imagenet.py", *args)


@pytest.mark.slow(seconds=110)
def test_overwrite_keeps_the_old_run_until_the_new_one_is_safe(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--epochs", "1", "--steps-per-epoch", "2", "--synthetic-eval-examples", "32",
            "--output-dir", str(run_dir)]
    first = in_process(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    old = read_metrics(run_dir)
    # A replacement that fails (NaN in its first epoch) puts the old run back when the
    # recipe's main stops (this process lives on: not at exit). (V3-Small: V1's ReLUs die
    # at this learning rate and its loss stays finite.)
    nan = in_process(*args, "--overwrite", "--model", "v3_small", "--alpha", "0.35", "--learning-rate", "1e12",
                     "--steps-per-epoch", "16")
    assert nan.returncode == 1 and "loss became NaN" in nan.stderr, nan.stderr[-3000:]
    assert "no epoch finished" in nan.stderr and "a rerun with the same flags resumes" in nan.stderr
    assert f"moved the run in {run_dir} to {run_dir}.previous" in nan.stdout
    assert "the previous run is back" in nan.stderr and read_metrics(run_dir) == old
    assert not (tmp_path / "run.previous").exists()
    # A replacement killed before its first epoch: the next start puts the old run back.
    proc = recipe(*args, "--overwrite", "--epochs", "3", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "config.json").exists() or not (
            tmp_path / "run.previous").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run.previous" / "metrics.json").exists()
    again = in_process(*args)
    assert again.returncode == 2 and "holds a finished run" in again.stderr, again.stderr[-2000:]
    assert read_metrics(run_dir) == old and not (tmp_path / "run.previous").exists()
    # A replacement that finishes deletes the old run.
    new = in_process(*args, "--overwrite", "--epochs", "2")
    assert new.returncode == 0, new.stderr[-3000:]
    assert read_metrics(run_dir)["epochs"] == 2 and not (tmp_path / "run.previous").exists()


@pytest.mark.slow(seconds=177)
def test_lost_worker_stops_the_other_and_both_resume(tmp_path):
    """Two local MultiWorkerMirroredStrategy workers: a killed worker stops the chief
    with a message; restarted, both resume and end with the same weights (two replicas)."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    run_dir = tmp_path / "run"
    args = [*TINY, "--epochs", "3", "--steps-per-epoch", "12", "--strategy", "multi_worker",
            "--output-dir", str(run_dir)]

    def start():
        return [recipe(*args, wait=False, env={"TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}) for index in range(2)]

    chief, worker = start()
    history = run_dir / "history.csv"
    deadline = time.time() + 400
    while time.time() < deadline and chief.poll() is None:
        if history.exists() and len(history.read_text().strip().splitlines()) >= 2:  # epoch 1 done
            break
        time.sleep(0.05)
    time.sleep(2)  # into epoch 2
    assert chief.poll() is None and worker.poll() is None, chief.stdout.read()[-2000:]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = time.time()
    try:
        output = chief.communicate(timeout=90)[0]
    except Exception:
        chief.kill()
        raise AssertionError("the chief did not stop within 90 s of losing its peer")
    assert time.time() - killed < 60, time.time() - killed
    assert chief.returncode == 1, output[-3000:]
    assert "lost contact with /job:worker/replica:0/task:1" in output, output[-3000:]
    assert "restart every worker" in output
    assert not (run_dir / "metrics.json").exists()

    procs = start()
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    for directory in (run_dir, run_dir / "workers" / "worker_1"):
        epochs = [int(line.split(",")[0]) for line in (directory / "history.csv").read_text().splitlines()[1:]]
        assert epochs == [0, 1, 2], directory
    chief_weights = h5_arrays(run_dir / "last.weights.h5")
    other = h5_arrays(run_dir / "workers" / "worker_1" / "last.weights.h5")
    assert len(chief_weights) == len(other) > 100
    assert all(np.array_equal(a, b) for a, b in zip(chief_weights, other))
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] == 3 and metrics["replicas"] == 2


def test_scheduled_evaluation_skips_epochs_and_needs_no_first_pass_when_keys_are_named():
    def evaluate(model):
        calls.append(model)
        return {"score": float(model)}

    def run(evaluation, epochs):
        return [evaluation(epoch, epoch) for epoch in range(epochs)]

    calls = []
    logs = run(fit._ScheduledEvaluation(evaluate, every=3, epochs=7), 7)
    assert calls == [0, 2, 5, 6]  # the first (to learn the keys), every 3rd, the last
    assert logs[2] == {"val_score": 2.0} and np.isnan(logs[1]["val_score"]) and np.isnan(logs[3]["val_score"])
    calls.clear()
    evaluate.result_keys = ("score",)
    logs = run(fit._ScheduledEvaluation(evaluate, every=3, epochs=7), 7)
    assert calls == [2, 5, 6] and np.isnan(logs[0]["val_score"]) and logs[6] == {"val_score": 6.0}
    assert list(run(fit._ScheduledEvaluation(evaluate, every=1, epochs=2), 2)[0]) == ["val_score"]


def test_best_checkpoint_ignores_epochs_that_were_not_evaluated(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "best.weights.h5"
    checkpoint = fit._Checkpoint(str(path), fit._WeightsFiles(), monitor="val_score", mode="max", save_best_only=True)
    checkpoint.set_model(model)
    saved = []
    for epoch, score in enumerate([float("nan"), 0.5, float("nan"), 0.4, 0.7]):
        model.layers[0].bias.assign([float(epoch)])
        checkpoint.on_epoch_end(epoch, {"loss": 1.0, "val_score": score})
        if path.exists():
            probe = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            probe.load_weights(path)
            saved.append(float(probe.layers[0].bias.numpy()[0]))
    assert saved == [1.0, 1.0, 1.0, 4.0]  # the NaN epoch 0 never saved; 0.4 is no improvement on 0.5


def test_weights_files_are_written_once_per_step_and_copied(tmp_path, monkeypatch):
    """The epoch's checkpoints and backup share one save_weights while the model holds the
    same weights; a training step or swapping the EMA in writes anew."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    swap = keras.callbacks.SwapEMAWeights()
    files, saves = fit._WeightsFiles(swap), []
    monkeypatch.setattr(model, "save_weights", lambda path, overwrite: (saves.append(path),
                                                                        keras.Model.save_weights(model, path)))
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    names = ["last", "best", "backup"]
    for name in names:
        files.save(model, str(tmp_path / f"{name}.weights.h5"))
    assert saves == [str(tmp_path / "last.weights.h5")]
    assert all(np.array_equal(a, b) for name in names[1:]
               for a, b in zip(h5_arrays(tmp_path / "last.weights.h5"), h5_arrays(tmp_path / f"{name}.weights.h5")))
    swap._ema_weights_in_model = True  # (what SwapEMAWeights' swap sets)
    files.save(model, str(tmp_path / "ema.weights.h5"))
    swap._ema_weights_in_model = False
    model.fit(x, y, epochs=1, verbose=0)
    files.save(model, str(tmp_path / "next.weights.h5"))
    assert saves[1:] == [str(tmp_path / "ema.weights.h5"), str(tmp_path / "next.weights.h5")]
