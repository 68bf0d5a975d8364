"""Training engine parts: config flags, schedules, weight decay, strategies, data."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # (disable_op_determinism)

import keras
import mobilenet_tf
from mobilenet_tf import data
from mobilenet_tf.data import classification, synthetic
from mobilenet_tf.training import config as config_lib, engine, schedules, strategy as strategy_lib


@dataclasses.dataclass
class Toy:
    """A toy config."""
    name: str = config_lib.field("a", "the name", choices=["a", "b"])
    size: int = config_lib.field(3, "a size")
    rate: float = config_lib.field(None, "optional rate")
    flag: bool = config_lib.field(False, "a switch")


def test_config_parser_has_a_flag_per_field(tmp_path):
    parser = config_lib.get_args_parser(Toy)
    assert {"--name", "--size", "--rate", "--flag", "--no-flag"} <= set(parser._option_string_actions)
    toy = config_lib.config_from_args(Toy, ["--size", "5", "--rate", "0.5", "--flag"])
    assert toy == Toy(name="a", size=5, rate=0.5, flag=True)
    with pytest.raises(SystemExit):
        config_lib.config_from_args(Toy, ["--name", "c"])
    config_lib.save_config(toy, tmp_path / "c.json")
    assert '"size": 5' in (tmp_path / "c.json").read_text()


def test_warmup_step_decay_and_linear_scaling():
    lr = schedules.WarmupStepDecay(peak_lr=1.0, steps_per_epoch=10, decay_rate=0.5, decay_epochs=2, warmup_epochs=1)
    assert [round(float(lr(s)), 4) for s in (0, 5, 10, 19, 20, 45)] == [0.0, 0.5, 1.0, 1.0, 0.5, 0.25]
    v3 = schedules.get_schedule("v3")
    assert schedules.scaled_lr(v3, 4096) == pytest.approx(0.1)
    assert schedules.scaled_lr(v3, 1024) == pytest.approx(0.025)
    assert schedules.scaled_lr(schedules.get_schedule("v2"), 96 * 16) == pytest.approx(0.045)
    restored = schedules.WarmupStepDecay.from_config(lr.get_config())
    assert float(restored(45)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"`schedule` must be one of \['v1', 'v2', 'v3', 'v4_conv_large', .*got 'v4'"):
        schedules.get_schedule("v4")


def test_v3_optimizer_is_rmsprop_with_ema():
    opt = schedules.make_optimizer(schedules.get_schedule("v3"), peak_lr=0.1, steps_per_epoch=100)
    assert isinstance(opt, keras.optimizers.RMSprop)
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.9999) and opt.momentum == 0.9 and opt.rho == 0.9
    assert not schedules.make_optimizer(schedules.get_schedule("v2"), peak_lr=0.1, steps_per_epoch=1).use_ema


def test_weight_decay_is_slim_l2_on_conv_and_dense_kernels_only():
    model = mobilenet_tf.build("v3_small", input_shape=(32, 32, 3), classes=4)
    count = schedules.add_weight_decay(model, 4e-5)
    kernels = [layer.kernel for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
               and not isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert count == len(kernels) > 0
    expected = 4e-5 / 2 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_strategy_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"`strategy` must be one of"):
        strategy_lib.get_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        strategy_lib.get_strategy("multi_worker")
    default = strategy_lib.get_strategy("default")
    assert strategy_lib.per_replica_batch(64, default) == 64 and strategy_lib.is_chief(default)


def test_logical_cpus_are_split_once_and_used_only_when_asked():
    """The suite's processes hold two logical CPUs (conftest): asking for two again is
    fine, for another count is refused; `auto` mirrors over them only when asked to."""
    from conftest import MIRRORED_CPUS

    assert len(tf.config.list_logical_devices("CPU")) == MIRRORED_CPUS
    strategy_lib.split_cpu(MIRRORED_CPUS)
    with pytest.raises(ValueError, match="must be set before TensorFlow initialises its devices"):
        strategy_lib.split_cpu(MIRRORED_CPUS + 1)
    assert strategy_lib.get_strategy("auto").num_replicas_in_sync == 1
    assert strategy_lib.get_strategy("auto", num_cpu_devices=2).num_replicas_in_sync == 2
    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        strategy_lib.per_replica_batch(33, strategy_lib.get_strategy("mirrored"))


def test_synthetic_data_is_reproducible_balanced_and_varied():
    a = list(synthetic.synthetic_classification(20, 32, 10, seed=3).as_numpy_iterator())
    b = list(synthetic.synthetic_classification(20, 32, 10, seed=3).as_numpy_iterator())
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert sorted(label for _, label in a) == sorted(list(range(10)) * 2)
    assert a[0][0].shape == (32, 32, 3) and a[0][0].dtype == np.uint8
    assert not np.array_equal(a[0][0], a[10][0])  # same class, different image
    assert len(synthetic.class_names(10)) == 10


def test_pipeline_shapes_ranges_and_eval_is_deterministic():
    split = classification.synthetic_split(False, 10, 48)
    ds = classification.make_pipeline(split, training=False, batch_size=4, image_size=40, deterministic=True)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 40, 40, 3), (4, 40, 40, 3), (2, 40, 40, 3)]
    assert batches[0][0].dtype == np.float32 and 0 <= batches[0][0].min() and batches[0][0].max() <= 255
    again = next(classification.make_pipeline(split, training=False, batch_size=4, image_size=40,
                                              deterministic=True).as_numpy_iterator())
    np.testing.assert_array_equal(batches[0][0], again[0])
    train = classification.make_pipeline(classification.synthetic_split(True, 10, 48), training=True,
                                         batch_size=4, image_size=40)
    assert next(iter(train))[0].shape == (4, 40, 40, 3)  # repeats, drops remainder


def test_pipelines_take_the_autotune_setting_and_give_the_same_data_either_way(monkeypatch):
    split = classification.synthetic_split(True, 12, 48)

    def first_batches(autotune):
        monkeypatch.setenv(data.AUTOTUNE_ENV, autotune)
        ds = classification.make_pipeline(split, training=True, batch_size=4, image_size=40, deterministic=True)
        assert ds.options().autotune.enabled is (autotune == "1") and ds.options().deterministic
        return [images for images, _ in ds.take(3).as_numpy_iterator()]

    # Under op determinism (`--deterministic`) the random augmentation in parallel maps
    # draws in a fixed order, whatever the parallelism autotuning picks.
    tf.config.experimental.enable_op_determinism()
    try:
        for on, off in zip(first_batches("1"), first_batches("0")):
            np.testing.assert_array_equal(on, off)
    finally:
        tf_config.disable_op_determinism()
    monkeypatch.setenv(data.AUTOTUNE_ENV, "no")
    with pytest.raises(ValueError, match="`MOBILENET_TF_DATA_AUTOTUNE` must be '0' or '1'; got 'no'"):
        classification.make_pipeline(split, training=False, batch_size=4, image_size=40)


def test_folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            tf.io.write_file(str(tmp_path / name / f"{i}.png"),
                             tf.io.encode_png(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    split = classification.folder_split(str(tmp_path))
    assert split.class_names == ["cat", "dog"] and split.num_examples == 6 and split.num_classes == 2
    images, labels = next(classification.make_pipeline(split, training=False, batch_size=6, image_size=16)
                          .as_numpy_iterator())
    assert images.shape == (6, 16, 16, 3) and sorted(labels) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="does not exist"):
        classification.folder_split(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="at least 2 class subfolders"):
        classification.folder_split(str(tmp_path / "cat"))


@pytest.mark.parametrize("name, classes", [("imagenet2012", 1000), ("imagenette", 10)])
def test_tfds_loaders_with_mock_data(name, classes, tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE, data_dir=str(tmp_path)):
        split = classification.tfds_split(name, "train", data_dir=str(tmp_path))
        assert split.num_classes == classes
        images, labels = next(classification.make_pipeline(split, training=True, batch_size=4, image_size=32)
                              .as_numpy_iterator())
    assert images.shape == (4, 32, 32, 3) and labels.max() < classes


def test_imagenet_without_manual_download_says_how(tmp_path):
    with pytest.raises(ValueError, match=r"ILSVRC2012_img_train.tar.*downloads.manual"):
        classification.tfds_split("imagenet2012", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'not_a_dataset'"):
        classification.tfds_split("not_a_dataset", "train", data_dir=str(tmp_path))


def test_evaluate_function_joins_history_and_picks_the_best_checkpoint(tmp_path):
    """``run_training(evaluate=...)``: a per-epoch score (like full-size mIoU or COCO mAP) is logged as
    val_<name> every ``evaluate_every`` epochs (NaN in between), monitored for best.weights.h5 (also
    across a restart), and no Keras validation data is needed."""
    scores = iter([0.2, 0.9, 0.5, 0.3])
    kernels = []

    def evaluate(model):
        kernels.append(model.layers[-1].get_weights()[0].copy())
        return {"score": next(scores)}

    def build():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        return model, keras.optimizers.SGD(0.1), keras.losses.MeanSquaredError(reduction=None), []

    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    train_ds = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(8).repeat()
    run = engine.prepare_run_dir(str(tmp_path / "run"))
    common = dict(build=build, train_ds=train_ds, eval_ds=None, evaluate=evaluate, monitor="val_score",
                  steps_per_epoch=4, eval_steps=None, run=run, strategy=tf.distribute.get_strategy(),
                  global_batch_size=8, verbose=0)
    _, history = engine.run_training(epochs=4, evaluate_every=3, **common)
    # Evaluated on epoch 1 (first of the process), 3 (every 3rd) and 4 (last).
    np.testing.assert_array_equal(history["val_score"], [0.2, np.nan, 0.9, 0.5])
    best = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    best.load_weights(run.path("best.weights.h5"))
    np.testing.assert_array_equal(best.layers[-1].get_weights()[0], kernels[1])  # epoch 3 scored best
    # Extending the run (its backup stays until the run's outputs are written) resumes at
    # epoch 5 and keeps the best so far: its 0.3 does not replace the 0.9 checkpoint.
    _, history = engine.run_training(epochs=5, **common)
    assert history["val_score"][-1] == 0.3 and len(history["val_score"]) == 5
    best.load_weights(run.path("best.weights.h5"))
    np.testing.assert_array_equal(best.layers[-1].get_weights()[0], kernels[1])
