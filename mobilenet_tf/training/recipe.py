"""The recipe skeleton, written once: a recipe file says only what its task needs.

A recipe is a ``Recipe`` subclass; the skeleton (``Recipe.main``) runs::

    resolve       presets over None fields (``select_dataset``, ``preset``), the task's
                  checks (``validate``), `--eval-only` needs `--weights`, the ``>= 1``
                  fields (``at_least_one``), the ``--tflite`` formats
    setup         strategy, batch divisibility, precision policy, seeds (``strategy.setup``)
    load          ``load_splits`` -> (train, val), then ``prepare`` (pipelines,
                  evaluator): all before the run directory, so bad data leaves nothing
    run dir       ``run_dir.open_run`` (config.json, resume checks, --overwrite);
                  skipped_files.txt from the splits' image checks (``image_checks``)
    train / eval  ``--eval-only``: ``build()[0]`` under the strategy's scope;
                  else ``train`` (default: ``fit.run_training`` with ``build``,
                  ``train_dataset``, ``eval_ds`` / ``evaluator``, ``monitor``)
    outputs       chief only (other workers return {}): ``final_metrics`` plus the
                  common keys (precision_policy, replicas, params, madds, epochs,
                  train_seconds, images_per_second), curves.png, the task's files
                  (``write_outputs``), model.keras + saved_model/ (``export_model``;
                  saved_model/ not with ``--no-saved-model``), the ``--tflite`` files, metrics.json,
                  then the training backups are deleted (``fit.finish_training``), the
                  ``summary`` line

``script(RecipeClass)`` gives a recipe file its module names (``Config``,
``resolve``, ``main``, ``get_args_parser``, ``cli``); ``recipe_main`` is the
``__main__`` with the exit codes: 2 for bad input (``ValueError``, or a data check
failing inside ``tf.data``), 1 when the loss became NaN or a worker was lost.

TFLite calibration data, one rule for every recipe: int8 files are calibrated on
the *training* split's images as evaluated (the evaluation pipeline: center crop /
resize, no augmentation), shuffled with ``--seed`` (buffer: 10 x the calibration
images), one image per batch; only where there is no training split (``--eval-only``
on a dataset loaded without one) the validation split's images are used. The
number of images is ``--calibration-images`` where the recipe has the flag, else
``CALIBRATION_IMAGES``. Recipes supply only how their split becomes images
(``calibration_images``).
"""

import dataclasses
import os
import sys

import tensorflow as tf

import mobilenet_tf
from mobilenet_tf import export
from mobilenet_tf.data import BAD_DATA, image_check
from mobilenet_tf.training import config as config_lib, reports, run_dir, schedules, strategy as strategy_lib
from mobilenet_tf.training.fit import NaNLossError, finish_training, run_training
from mobilenet_tf.training.multi_worker import WorkerLostError

CALIBRATION_IMAGES = 100  # int8 calibration images where a recipe has no --calibration-images


def check_at_least_one(config, names):
    """``ValueError`` naming the first field of ``names`` below 1 (as its flag)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(config, name)}.")


def fill_presets(config, preset):
    """``config`` with every None field that ``preset`` names set to the preset's value."""
    return dataclasses.replace(config, **{key: value for key, value in preset.items() if getattr(config, key) is None})


def synthetic_splits(synthetic_split, config, image_size):
    """(train, val) from a task's ``synthetic_split(training, num_examples, image_size,
    num_classes, seed)``, sized by the config's ``synthetic_train_examples``,
    ``synthetic_eval_examples`` and ``synthetic_classes``."""
    return tuple(synthetic_split(training, examples, image_size, config.synthetic_classes, config.seed)
                 for training, examples in ((True, config.synthetic_train_examples),
                                            (False, config.synthetic_eval_examples)))


def shuffled_split(split, count, seed, buffer=None):
    """``split`` (a dataclass with a ``dataset``) with its examples shuffled by ``seed``
    in a buffer of ``10 * count`` (at most ``buffer``) examples."""
    size = 10 * count if buffer is None else max(1, min(10 * count, buffer))
    return dataclasses.replace(split, dataset=split.dataset.shuffle(size, seed=seed))


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


class Recipe:
    """A training recipe: the task's part of a run; ``main(config)`` runs the skeleton.

    Class attributes (the task's constants):
        Config: the config dataclass (a ``config.RunOptions`` subclass with
            ``PRESETS``, ``{label: {field: value}}``; it needs the fields
            ``weights``, ``tflite``, ``output_dir``, ``epochs``, ``global_batch_size``).
        real_dataset: what ``--data-dir`` without ``--dataset`` selects (None: the
            recipe has no ``--dataset`` to select); ``real_dataset_note`` ends the
            refusal of ``--dataset synthetic`` with ``--data-dir``.
        at_least_one: fields that must be >= 1.
        weights_text: what ``--weights`` is, for "`--eval-only` needs --weights (...)".
        monitor, plot_metric: the metric picking best.weights.h5; curves.png's metric.
        tflite_formats, tflite_name: the ``--tflite`` names taken (of
            ``export.FORMATS``); files are ``<tflite_name>_<format>.tflite``.
        compile_for_eval: ``--eval-only`` compiles the model with the build's loss and
            metrics (for ``model.evaluate``).

    Hooks, on an instance holding ``config`` (resolved), ``strategy``, and once
    loaded ``train_split`` / ``val_split``, ``run`` and ``steps_per_epoch``:
    ``validate`` (class method), ``load_splits``, ``prepare``, ``build``,
    ``train_dataset``, ``final_metrics``, ``write_outputs``, ``calibration_images``,
    ``summary``; the others (``export_model``, ``profiled_model``, ...) have defaults.
    """

    Config = None
    real_dataset = None
    real_dataset_note = ""
    at_least_one = ("epochs", "global_batch_size")
    weights_text = "a .weights.h5 of the whole model"
    monitor = "val_top1"
    plot_metric = "top1"
    tflite_formats = tuple(export.FORMATS)
    tflite_name = "model"
    compile_for_eval = False

    def __init__(self, config, strategy):
        self.config, self.strategy = config, strategy
        self.train_split = self.val_split = None
        self.run, self.chief, self.steps_per_epoch = None, True, None
        self.eval_ds, self.eval_steps, self.evaluator, self.ema = None, None, None, False

    # --- the config -------------------------------------------------------------

    @classmethod
    def select_dataset(cls, config):
        """``--dataset`` left out: ``real_dataset`` with ``--data-dir``, else synthetic;
        ``--dataset synthetic`` with ``--data-dir`` is refused."""
        if cls.real_dataset is None:
            return config
        if config.dataset is None:
            return dataclasses.replace(config, dataset=cls.real_dataset if config.data_dir else "synthetic")
        if config.dataset == "synthetic" and config.data_dir:
            raise ValueError(
                f"`--data-dir` {config.data_dir!r} selects a real TFDS dataset but `--dataset synthetic` was given: "
                "drop --data-dir to train on synthetic data, or drop `--dataset synthetic` to read "
                f"{cls.real_dataset} from it{cls.real_dataset_note}.")
        return config

    @classmethod
    def preset_label(cls, config):
        """The ``Config.PRESETS`` label that ``config`` selects: its ``dataset`` when a
        preset has that name, "synthetic" for synthetic data, else the other preset."""
        presets = cls.Config.PRESETS
        if config.dataset in presets:
            return config.dataset
        return next(label for label in presets if label != "synthetic")

    @classmethod
    def preset(cls, config):
        """{field: value} filling the None fields of ``config``. A preset's ``alpha`` is
        the MobileNets' width: a ``backbone`` without a width multiplier gets 1.0 (an
        unknown name is refused here, naming the registry's)."""
        preset = dict(cls.Config.PRESETS[cls.preset_label(config)])
        backbone = getattr(config, "backbone", None) or preset.get("backbone")
        if "alpha" in preset and backbone and not mobilenet_tf.registry.accepts(backbone, "alpha"):
            preset["alpha"] = 1.0  # other families have their width in the name
        return preset

    @classmethod
    def validate(cls, config):
        """The task's checks of the filled ``config`` (``ValueError`` naming the flag);
        may return a changed config."""
        return config

    @classmethod
    def resolve(cls, config):
        """Fill every None with the selected preset's value; check inputs early."""
        config = cls.select_dataset(config)
        config = fill_presets(config, cls.preset(config))
        config = cls.validate(config) or config
        if config.eval_only and not config.weights:
            raise ValueError(f"`--eval-only` needs --weights ({cls.weights_text}).")
        check_at_least_one(config, cls.at_least_one)
        export.parse_formats(config.tflite, cls.tflite_formats)
        return config

    # --- data and model ---------------------------------------------------------

    # The task's ``synthetic_split(training, num_examples, image_size, num_classes, seed)``
    # (a ``staticmethod``), used for ``--dataset synthetic`` (``synthetic_splits``).
    synthetic_split = None

    def synthetic_size(self):
        """The image side of the synthetic data."""
        return self.config.image_size

    def load_splits(self):
        """(train split or None, validation split), before the run directory exists:
        the synthetic splits for ``--dataset synthetic``, else ``load_real_splits``."""
        if self.synthetic_split is not None and getattr(self.config, "dataset", None) == "synthetic":
            return synthetic_splits(self.synthetic_split, self.config, self.synthetic_size())
        return self.load_real_splits()

    def load_real_splits(self):
        """(train split or None, validation split) of a real dataset."""
        raise NotImplementedError

    def prepare(self):
        """After the splits, before the run directory: evaluation pipelines (``eval_ds``,
        ``eval_steps``), the ``evaluator``, anything loading may refuse."""

    def image_checks(self):
        """The image-check reports of the loaded data (listed in skipped_files.txt)."""
        return [getattr(split, "check", None) for split in (self.train_split, self.val_split) if split is not None]

    def count_steps(self):
        """Training steps per epoch: ``--steps-per-epoch`` or the training examples / batch."""
        return self.config.steps_per_epoch or schedules.steps_for(
            self.train_split.num_examples if self.train_split else 1, self.config.global_batch_size)

    def build(self):
        """``(model, optimizer, loss, metrics)``, called under the strategy's scope."""
        raise NotImplementedError

    def train_dataset(self):
        """The repeated training pipeline, batched by the global batch size."""
        raise NotImplementedError

    def train(self):
        """Train; returns (model, history)."""
        config = self.config
        return run_training(
            build=self.build, train_ds=self.train_dataset(), eval_ds=self.eval_ds, eval_steps=self.eval_steps,
            evaluate=self.evaluator, evaluate_every=getattr(config, "eval_every", 1), monitor=self.monitor,
            epochs=config.epochs, steps_per_epoch=self.steps_per_epoch, run=self.run, strategy=self.strategy,
            global_batch_size=config.global_batch_size, options=config, ema=self.ema)

    def eval_only_model(self):
        """``--eval-only``: the model of ``build`` (loading ``--weights``)."""
        with self.strategy.scope():
            model, _, loss, metrics = self.build()
            if self.compile_for_eval:
                model.compile(loss=loss, metrics=metrics)
        return model

    # --- outputs ----------------------------------------------------------------

    def final_metrics(self, model, history):
        """The task's entries of metrics.json (the common keys are added after)."""
        raise NotImplementedError

    def deployed_model(self, model):
        """The model exported (model.keras, saved_model/, TFLite) and profiled."""
        return model

    def profiled_model(self, model):
        """The model whose params / madds metrics.json reports (None: none)."""
        return model

    def write_outputs(self, model, metrics):
        """The task's own files in the run directory (before the exports)."""

    def export_model(self, model):
        """model.keras and, unless ``--no-saved-model``, saved_model/ (``reports.export_model``)."""
        reports.export_model(model, self.run, self.config.saved_model)

    def calibration_images(self, split, count):
        """(1, H, W, 3) batches of ``split``'s images as evaluated, shuffled (the rule
        in this module's docstring); ``count`` of them are used."""
        raise NotImplementedError

    def calibration_data(self):
        """Calibration batches by the rule: the training split, else the validation split."""
        count = getattr(self.config, "calibration_images", CALIBRATION_IMAGES)
        split = self.train_split if self.train_split is not None else self.val_split
        return self.calibration_images(split, count), count

    def to_tflite(self, model, fmt, path, calibration, count):
        """One ``--tflite`` file; returns its path."""
        return export.to_tflite(model, path, fmt, calibration, calibration_steps=count)

    def evaluate_tflite(self, paths, model, metrics):
        """Evaluate the TFLite files ({format: path}) into ``metrics`` (default: not)."""

    def summary(self, metrics):
        """The final line, before "  -> <run dir>"."""
        return f"({metrics['epochs']} epochs, {metrics['images_per_second']:.1f} img/s)"

    # --- the skeleton -----------------------------------------------------------

    @classmethod
    def main(cls, config):
        """Run the recipe (see the module docstring); returns metrics.json's dict ({} on
        a worker that is not the chief)."""
        config = cls.resolve(config)
        strategy, policy = strategy_lib.setup(config)
        recipe = cls(config, strategy)
        recipe.train_split, recipe.val_split = recipe.load_splits()
        recipe.prepare()
        recipe.run, recipe.chief = run_dir.open_run(config, strategy)
        try:
            check = image_check.merged(recipe.image_checks())
            if recipe.chief and check is not None:
                print(image_check.write_skipped(check, recipe.run.root), flush=True)
            recipe.steps_per_epoch = recipe.count_steps()
            if config.eval_only:
                model, history = recipe.eval_only_model(), {}
            else:
                model, history = recipe.train()
            if not recipe.chief:
                return {}
            return recipe.finish(model, history, policy)
        finally:
            if recipe.chief:  # the run --overwrite set aside: deleted, or back if this run saved nothing
                run_dir.settle_previous_run(recipe.run.root)

    def finish(self, model, history, policy):
        """The chief's outputs: metrics, curves, the task's files, exports, metrics.json."""
        config, run = self.config, self.run
        metrics = self.final_metrics(model, history)
        metrics.update(reports.throughput(history, self.steps_per_epoch, config.global_batch_size),
                       precision_policy=policy, replicas=self.strategy.num_replicas_in_sync)
        deployed = self.deployed_model(model)
        profiled = self.profiled_model(deployed)
        if profiled is not None:
            profile = mobilenet_tf.profile(profiled)
            metrics.update(params=profile.params, madds=profile.madds)
        if history:
            reports.plot_history(history, run.path("curves.png"), metric=self.plot_metric)
        self.write_outputs(model, metrics)
        self.export_model(deployed)
        formats = export.parse_formats(config.tflite, self.tflite_formats)
        if formats:
            calibration, count = self.calibration_data()
            paths = {fmt: self.to_tflite(deployed, fmt, run.path(f"{self.tflite_name}_{fmt}.tflite"), calibration,
                                         count) for fmt in formats}
            self.evaluate_tflite(paths, deployed, metrics)
        reports.write_metrics(run, metrics)
        finish_training(run)  # the backups kept a run killed before metrics.json from training again
        print(f"{self.summary(metrics)}  -> {run.root}")
        return metrics


def script(recipe_cls):
    """A recipe file's module names: ``Config, resolve, main, get_args_parser, cli``
    (``cli(argv=None)`` is its ``__main__``). ``recipe_cls``: a ``Recipe`` subclass, or
    anything with ``Config``, ``resolve`` and ``main`` (``mobilenet_tf.deep_compression``)."""

    def get_args_parser():
        return config_lib.get_args_parser(recipe_cls.Config)

    def cli(argv=None):
        recipe_main(recipe_cls.main, recipe_cls.Config, argv)

    return recipe_cls.Config, recipe_cls.resolve, recipe_cls.main, get_args_parser, cli
