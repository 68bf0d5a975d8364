"""Training throughput: our engine vs a plain ``model.fit``, and the input pipeline alone.

    python benchmarks/training.py                       # V3-Small, 96 px, batch 64, synthetic data
    python benchmarks/training.py --model v2 --image-size 128 --steps 30

Both runs train the same architecture (ours through ``engine.run_training`` with
all its callbacks: checkpoints, backup, CSV, TensorBoard, EMA swap; the
keras.applications model through a bare ``model.fit``) with the same RMSProp,
loss and ``tf.data`` pipeline, for two epochs; the second epoch is timed, so
tracing is excluded. Prints images/s of each, over the train steps alone and over
the whole epoch (which adds our per-epoch validation, checkpoints and logs, a fixed
cost that a real epoch of thousands of steps amortises), their ratios (target >=
0.95 for the steps), and the pipeline's own images/s (several times the training
rate, so the pipeline is not the bottleneck).
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import mobilenet_tf  # noqa: E402
from mobilenet_tf import weights  # noqa: E402
from mobilenet_tf.data import classification  # noqa: E402
from mobilenet_tf.training import engine, schedules  # noqa: E402


class EpochTimes(keras.callbacks.Callback):
    """Per epoch: wall time of the whole epoch, and the summed time of its train steps."""

    def __init__(self):
        super().__init__()
        self.times, self.step_times = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.step_times.append(0.0)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_times[-1] += time.perf_counter() - self._batch_start

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    args = parser.parse_args(argv)
    classes, shape = 10, (args.image_size, args.image_size, 3)
    split = classification.synthetic_split(True, args.batch * args.steps, args.image_size, classes)
    one_hot = lambda x, y: (x, tf.one_hot(y, classes))
    data = classification.make_pipeline(split, training=True, batch_size=args.batch,
                                        image_size=args.image_size).map(one_hot)
    schedule = schedules.get_schedule("v3")

    def optimizer():
        return schedules.make_optimizer(schedule, peak_lr=1e-3, steps_per_epoch=args.steps, ema=0.99)

    def loss(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=0.1)

    # The input pipeline alone.
    iterator = iter(data)
    next(iterator)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(iterator)
    pipeline_rate = args.steps * args.batch / (time.perf_counter() - start)

    # A bare model.fit of the keras.applications model.
    plain_model = weights.keras_application(args.model, input_shape=shape, classes=classes)
    plain_model.compile(optimizer=optimizer(), loss=loss, metrics=["accuracy"])
    plain_times = EpochTimes()
    plain_model.fit(data, epochs=2, steps_per_epoch=args.steps, callbacks=[plain_times], verbose=0)

    # Our engine with all its callbacks.
    def build():
        model = mobilenet_tf.build(args.model, input_shape=shape, classes=classes, include_preprocessing=True)
        return model, optimizer(), loss, [keras.metrics.CategoricalAccuracy(name="top1")]

    ours_times = EpochTimes()
    with tempfile.TemporaryDirectory() as tmp:
        engine.run_training(build=build, train_ds=data, eval_ds=data.take(1), epochs=2, steps_per_epoch=args.steps,
                            eval_steps=1, run=engine.prepare_run_dir(tmp), strategy=tf.distribute.get_strategy(),
                            global_batch_size=args.batch, ema=True, verbose=0, callbacks=[ours_times])
    images = args.steps * args.batch
    plain_step, ours_step = images / plain_times.step_times[-1], images / ours_times.step_times[-1]
    plain_epoch, ours_epoch = images / plain_times.times[-1], images / ours_times.times[-1]
    print(f"{args.model} {args.image_size}px batch {args.batch}, {args.steps} steps per epoch, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}\n")
    print("| images/s | train steps | whole epoch (+ validation, checkpoints, logs) |")
    print("|---|---|---|")
    print(f"| keras.applications + bare model.fit | {plain_step:.0f} | {plain_epoch:.0f} |")
    print(f"| mobilenet_tf engine | {ours_step:.0f} | {ours_epoch:.0f} |")
    print(f"| ratio engine / bare fit | {ours_step / plain_step:.2f} | {ours_epoch / plain_epoch:.2f} |")
    print(f"| input pipeline alone | {pipeline_rate:.0f} ({pipeline_rate / ours_step:.1f}x training) | |")


if __name__ == "__main__":
    main()
