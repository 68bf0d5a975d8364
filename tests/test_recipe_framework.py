"""The recipe skeleton (mobilenet_tf.training.recipe) with a tiny fake recipe, in-process:
presets over None fields, the common checks, eval-only, run directory outputs, the
metrics' common keys, the calibration rule and the exit codes."""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf._keras import keras
from mobilenet_tf.data import image_check
from mobilenet_tf.training import config as config_lib, engine, recipe
from mobilenet_tf.training.config import field
from mobilenet_tf.training.fit import FitOptions

SYNTHETIC = dict(units=3, epochs=2, global_batch_size=8)
REAL = dict(units=5, epochs=9, global_batch_size=16)


@dataclasses.dataclass
class ToyConfig(config_lib.RunOptions):
    """A toy regression recipe."""

    PRESETS = {"synthetic": SYNTHETIC, "real data": REAL}

    dataset: Optional[str] = field(None, "synthetic | toyset", default_text="toyset with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "data dir")
    units: Optional[int] = field(None, "hidden units")
    epochs: Optional[int] = field(None, "epochs")
    global_batch_size: Optional[int] = field(None, "batch")
    steps_per_epoch: Optional[int] = field(None, "steps per epoch")
    steps_per_execution: int = field(1, "steps per call")
    tflite: str = field("", "TFLite formats")
    calibration_images: int = field(5, "calibration images")
    output_dir: str = field("runs/toy", "run directory")
    weights: Optional[str] = field(None, "weights")


@dataclasses.dataclass
class Split:
    dataset: tf.data.Dataset
    num_examples: int
    name: str
    check: Optional[image_check.CheckReport] = None


def _split(name, n, seed, check=None):
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")
    return Split(tf.data.Dataset.from_tensor_slices((x, x[:, :2] - x[:, 2:])), n, name, check)


class Toy(recipe.Recipe):
    Config = ToyConfig
    real_dataset = "toyset"
    monitor, plot_metric = "val_score", "score"
    calibrated_on = []

    def load_splits(self):
        check = image_check.CheckReport(files={"a.jpg", "b.jpg"}, unreadable=[("b.jpg", "empty")])
        train = None if self.config.eval_only else _split("train", 32, 0, check)
        return train, _split("val", 16, 1)

    def prepare(self):
        self.evaluator = lambda model: {"score": 0.5}

    def build(self):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(self.config.units),
                                  keras.layers.Dense(2)])
        if self.config.weights:
            model.load_weights(self.config.weights)
        return model, keras.optimizers.SGD(0.01), keras.losses.MeanSquaredError(reduction=None), []

    def train_dataset(self):
        return self.train_split.dataset.batch(self.config.global_batch_size).repeat()

    def final_metrics(self, model, history):
        return dict(units=self.config.units, loss_epochs=len(history.get("loss", [])))

    def calibration_images(self, split, count):
        Toy.calibrated_on.append((split.name, count))
        return split.dataset.map(lambda x, y: x).batch(1)


Config, resolve, main, get_args_parser, cli = recipe.script(Toy)


def test_presets_fill_only_none_fields_and_data_dir_selects_the_real_dataset(tmp_path):
    assert resolve(Config()).units == 3 and resolve(Config()).dataset == "synthetic"
    real = resolve(Config(data_dir=str(tmp_path)))
    assert (real.dataset, real.units, real.epochs) == ("toyset", 5, 9)
    assert resolve(Config(units=7)).units == 7
    with pytest.raises(ValueError, match=r"selects a real TFDS dataset but `--dataset synthetic` was given.*"
                                         r"to read toyset from it\."):
        resolve(Config(dataset="synthetic", data_dir=str(tmp_path)))


@pytest.mark.parametrize("overrides, message", [
    (dict(epochs=0), r"`--epochs` must be >= 1; got 0\."),
    (dict(global_batch_size=-1), r"`--global-batch-size` must be >= 1; got -1\."),
    (dict(eval_only=True), r"`--eval-only` needs --weights \(a \.weights\.h5 of the whole model\)\."),
    (dict(tflite="fp32,fp16"), r"`--tflite` formats must be among"),
])
def test_common_checks(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve(Config(**overrides))


def test_flags_are_the_config():
    assert vars(get_args_parser().parse_args([])) == {f.name: f.default for f in dataclasses.fields(Config)}


@pytest.mark.slow(seconds=3)
def test_train_then_eval_only_write_the_run_directory(tmp_path, capsys):
    Toy.calibrated_on.clear()
    out = tmp_path / "run"
    metrics = main(Config(output_dir=str(out), tflite="fp32,int8", verbose="0"))
    names = set(os.listdir(out))
    assert {"config.json", "metrics.json", "history.csv", "best.weights.h5", "last.weights.h5", "curves.png",
            "model.keras", "saved_model", "model_fp32.tflite", "model_int8.tflite",
            "skipped_files.txt"} <= names
    assert (out / "skipped_files.txt").read_text() == "b.jpg\tempty\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    common = {"precision_policy", "replicas", "params", "madds", "epochs", "train_seconds", "images_per_second"}
    assert common | {"units", "loss_epochs"} == set(saved)
    assert saved["epochs"] == saved["loss_epochs"] == 2 and saved["replicas"] == 1 and saved["params"] > 0
    assert Toy.calibrated_on == [("train", 5)]  # the rule: the training split when there is one
    assert json.loads((out / "config.json").read_text())["units"] == 3
    assert f"-> {out}" in capsys.readouterr().out
    # Eval-only: build()[0] with --weights, no training, calibration on the validation split.
    evaluated = tmp_path / "eval"
    metrics = main(Config(output_dir=str(evaluated), eval_only=True, weights=str(out / "best.weights.h5"),
                          tflite="int8"))
    assert metrics["epochs"] == 0 and metrics["loss_epochs"] == 0
    assert "curves.png" not in os.listdir(evaluated) and "history.csv" not in os.listdir(evaluated)
    assert Toy.calibrated_on[-1] == ("val", 5)
    # A finished run is not replaced without --overwrite.
    with pytest.raises(ValueError, match="holds a finished run"):
        main(Config(output_dir=str(out)))


def test_recipe_main_exit_codes_and_no_run_dir_on_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli(["--epochs", "0", "--output-dir", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    assert "error: `--epochs` must be >= 1; got 0." in capsys.readouterr().err


def test_fit_options_from_a_config_and_overrides():
    options = FitOptions.from_config(Config(jit_compile=True, verbose="0", sync_batchnorm=False))
    assert options == FitOptions(jit_compile=True, steps_per_execution=1, sync_batchnorm=False, verbose=0)
    assert FitOptions.from_config(options, verbose=2).verbose == 2
    assert engine.FitOptions is FitOptions and engine.run_training is recipe.run_training


def test_one_quantization_vocabulary_with_the_old_spellings_as_aliases():
    from mobilenet_tf import benchmark, cli, export
    from mobilenet_tf.heads.ssdlite import deploy

    assert export.QUANTIZATIONS == ("fp32", "float16", "dynamic", "int8", "qat")
    assert list(export.FORMATS) == ["fp32", "float16", "dynamic", "int8"]
    for alias, name in [(None, "fp32"), ("none", "fp32"), ("fp16", "float16"), ("int8", "int8"), ("qat", "qat")]:
        assert export.quantization_name(alias) == name
    with pytest.raises(ValueError, match=r"`quantization` must be one of \['fp32', 'int8'\]; got 'dynamic'"):
        export.quantization_name("dynamic", deploy.QUANTIZATIONS)
    assert set(deploy.QUANTIZATIONS) <= set(export.QUANTIZATIONS)
    # Bench backends derive from the formats; the old names still work.
    assert list(benchmark.BACKENDS) == ["keras"] + [f"tflite-{name}" for name in export.FORMATS]
    benchmark.check_backends(["keras", "tflite", "tflite-fp16", "tflite-float16", "tflite-int8"])
    assert benchmark.backend_quantization("tflite") == "fp32"
    assert benchmark.backend_quantization("tflite-fp16") == "float16"
    with pytest.raises(ValueError, match="must be among"):
        benchmark.check_backends(["tflite-qat"])
    # The CLI's --quantize: the format names, and "none" (its default) still meaning fp32.
    assert list(cli.QUANTIZE_CHOICES) == ["none", *export.FORMATS] and "none" in cli.QUANTIZE_CHOICES
    parser = cli.get_args_parser()
    for typed in ["none", "fp32", "float16", "int8"]:
        assert parser.parse_args(["export", "v1", "--quantize", typed, "--out", "x"]).quantize == typed
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "v1", "--quantize", "qat", "--out", "x"])
