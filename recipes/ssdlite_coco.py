"""Train and evaluate SSDLite detection on MobileNet V2/V3 (V2 paper 6.2, V3 paper 6.2).

    python recipes/ssdlite_coco.py                        # synthetic shapes, CPU, a few minutes, learns
    python recipes/ssdlite_coco.py --backbone v3_small --data-dir ~/tensorflow_datasets --strategy auto \\
        --output-dir runs/ssd                             # --data-dir alone means --dataset coco/2017
    python recipes/ssdlite_coco.py --eval-only --weights runs/ssd/best.weights.h5 --backbone v3_small \\
        --data-dir ~/tensorflow_datasets --output-dir runs/ssd_eval
    python recipes/ssdlite_coco.py --help

COCO defaults follow the TF Object Detection API's
``ssdlite_mobilenet_v3_large_320x320_coco.config`` (see ``COCO_DEFAULTS``): 320x320,
momentum-0.9 SGD, cosine decay from lr 0.4 at batch 512 with a linear warmup from
0.13333 over 2000 steps, 400k steps, focal loss, L2 4e-5, BN decay 0.97, SSD
random crop + flip. The learning rates are scaled linearly to the global batch
you use, and the step counts are kept as images seen: warmup and length are
given in epochs (2000 x 512 images = 8.7 epochs; 400k x 512 = 1731 epochs of
COCO 2017's 118,287 training images), so a smaller batch takes more steps.

The run directory gets config.json, checkpoints, TensorBoard logs, history.csv,
metrics.json (COCO AP, AP50, AP75, APs/m/l, AR), detections.json (COCO results
format, COCO category ids), ground_truth.json, curves.png, detections.png,
model.keras, saved_model/ (raw outputs), detector/ (a SavedModel with decoding and
NMS in the graph), and optionally TFLite detectors.
"""

import dataclasses
import json
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import export  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads import ssdlite  # noqa: E402
from mobilenet_tf.heads.ssdlite import coco_eval, data, deploy, losses, postprocess, visualize  # noqa: E402
from mobilenet_tf.training import config as config_lib, engine, schedules  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

COCO_TRAIN_IMAGES = 118_287
REFERENCE_BATCH = 512
COCO_DEFAULTS = dict(backbone="v3_large", input_size=320, epochs=round(400_000 * REFERENCE_BATCH / COCO_TRAIN_IMAGES),
                     global_batch_size=64, learning_rate=0.4, warmup_learning_rate=0.13333,
                     warmup_epochs=2000 * REFERENCE_BATCH / COCO_TRAIN_IMAGES, bn_momentum=ssdlite.model.BN_MOMENTUM,
                     eval_every=10, shuffle_buffer=256)
# What the synthetic default changes so that it learns on a CPU in minutes (lrs at batch 512).
SYNTHETIC_DEFAULTS = dict(backbone="v3_small", input_size=160, epochs=6, global_batch_size=32, learning_rate=2.0,
                          warmup_learning_rate=0.2, warmup_epochs=0.5, bn_momentum=0.9, eval_every=1,
                          shuffle_buffer=1000)
TFLITE_FORMATS = ("fp32", "int8")


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Train and evaluate SSDLite detection on MobileNet V2/V3 (V2 paper 6.2, V3 paper 6.2)."""

    # What a None field takes, by --dataset (the help lists these values).
    PRESETS = {"coco": COCO_DEFAULTS, "synthetic": SYNTHETIC_DEFAULTS}

    backbone: Optional[str] = field(None, "v2 | v3_large | v3_small")
    alpha: float = field(1.0, "backbone width multiplier")
    reduced_tail: Optional[bool] = field(None, "halve the last stage (the V3 paper's dagger rows)",
                                           default_text="yes for V3")
    dataset: Optional[str] = field(None, "synthetic | coco/2017 | coco/2014",
                                   choices=["synthetic", *data.COCO_DATASETS],
                                   default_text="coco/2017 with --data-dir, else synthetic")
    data_dir: Optional[str] = field(None, "TFDS data dir (COCO downloads itself there)")
    input_size: Optional[int] = field(None, "square input side")
    loss: str = field("focal", "focal (V3 config: sigmoid focal + smooth L1) | hard_negative_mining (SSD / V2 "
                               "paper: softmax with 3:1 negatives)", choices=list(losses.LOSSES))
    zoom_out: bool = field(False, "SSD's zoom-out (expansion) augmentation, for small objects")
    colour_jitter: bool = field(False, "SSD's photometric distortions")
    epochs: Optional[int] = field(None, "epochs (the COCO preset: the config's 400k steps at batch 512)")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training images / global batch")
    global_batch_size: Optional[int] = field(None, "batch over all replicas")
    learning_rate: Optional[float] = field(None, "peak lr at batch 512, scaled to --global-batch-size")
    warmup_learning_rate: Optional[float] = field(None, "warmup start lr at batch 512")
    warmup_epochs: Optional[float] = field(None, "linear warmup epochs (the COCO preset: the config's 2000 steps "
                                                "at batch 512)")
    momentum: float = field(0.9, "SGD momentum")
    weight_decay: float = field(ssdlite.model.WEIGHT_DECAY, "L2 on conv kernels (the config's l2_regularizer)")
    bn_momentum: Optional[float] = field(None, "BatchNormalization momentum")
    eval_every: Optional[int] = field(None, "COCO evaluation every N epochs and after the last")
    eval_examples: int = field(0, "evaluate on the first N validation images (0 = all)")
    eval_batch_size: int = field(16, "evaluation batch size")
    shuffle_buffer: Optional[int] = field(None, "examples in the shuffle buffer")
    display_threshold: float = field(0.3, "score threshold for detections.png (evaluation keeps all >= 1e-8)")
    synthetic_classes: int = field(5, "classes of the synthetic dataset, background included")
    synthetic_train_examples: int = field(2000, "synthetic training scenes per epoch")
    synthetic_eval_examples: int = field(200, "synthetic evaluation scenes")
    tflite: str = field("", "also export TFLite detectors: comma list of fp32, int8")
    output_dir: str = field("runs/ssdlite", "run directory")
    weights: Optional[str] = field(None, "a .weights.h5 of the whole model to start from / evaluate")
    backbone_weights: Optional[str] = field(None, "'imagenet' or a backbone .weights.h5 (imagenet needs "
                                                  "--no-reduced-tail for V3)")


def resolve(config):
    """Fill every None with the dataset's default; check inputs early."""
    if config.dataset is None:
        config = dataclasses.replace(config, dataset="coco/2017" if config.data_dir else "synthetic")
    elif config.dataset == "synthetic" and config.data_dir:
        raise ValueError(f"`--data-dir` {config.data_dir!r} selects a real TFDS dataset but `--dataset synthetic` "
                         "was given: drop --data-dir to train on synthetic data, or drop `--dataset synthetic` "
                         "to read coco/2017 from it (or name coco/2014).")
    preset = SYNTHETIC_DEFAULTS if config.dataset == "synthetic" else COCO_DEFAULTS
    resolved = dataclasses.replace(config, **{key: value for key, value in preset.items()
                                              if getattr(config, key) is None})
    mobilenet_tf.registry.get_entry(resolved.backbone)  # unknown name -> ValueError
    if resolved.eval_only and not resolved.weights:
        raise ValueError("`--eval-only` needs --weights (a .weights.h5 of the whole model).")
    for name in ("epochs", "global_batch_size", "eval_batch_size", "eval_every", "shuffle_buffer"):
        if getattr(resolved, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(resolved, name)}.")
    if resolved.dataset == "synthetic" and not 2 <= resolved.synthetic_classes <= 255:
        raise ValueError(f"`--synthetic-classes` must be in [2, 255]; got {resolved.synthetic_classes}.")
    if resolved.weights and not os.path.isfile(resolved.weights):
        raise ValueError(f"`--weights` {resolved.weights!r} is not a file.")
    export.parse_formats(resolved.tflite, TFLITE_FORMATS)
    return resolved


def load_splits(config):
    if config.dataset == "synthetic":
        train = data.synthetic_split(True, config.synthetic_train_examples, config.input_size,
                                     config.synthetic_classes, config.seed)
        val = data.synthetic_split(False, config.synthetic_eval_examples, config.input_size,
                                   config.synthetic_classes, config.seed)
    else:
        train = None if config.eval_only else data.coco_split("train", config.data_dir, name=config.dataset)
        val = data.coco_split("validation", config.data_dir, name=config.dataset)
    if config.eval_examples:
        val = dataclasses.replace(val, dataset=val.dataset.take(config.eval_examples),
                                  num_examples=min(val.num_examples, config.eval_examples))
    return train, val


class COCOEvaluator:
    """COCO mAP of a model on the validation split: decode + NMS (score >= 1e-8,
    100 per image), detections in COCO json, ``pycocotools`` COCOeval. The ground
    truth is gathered once; ``last`` keeps the latest results and detections."""

    def __init__(self, split, eval_ds, activation):
        self.split, self.eval_ds, self.activation = split, eval_ds, activation
        images, self.dropped_boxes = data.ground_truth_images(eval_ds)
        self.ground_truth = coco_eval.ground_truth(images, split.class_names, split.category_ids)
        self.last = None
        self._detector = None

    def detector(self, model):
        """The ``Detector`` (decode + NMS, traced once) for ``model``."""
        if self._detector is None or self._detector.model is not model:
            self._detector = postprocess.build_inference_model(model, activation=self.activation)
        return self._detector

    def detect(self, model):
        """COCO results list for every validation image."""
        detector = self.detector(model)
        results = []
        for images, info in self.eval_ds.as_numpy_iterator():
            out = {key: value.numpy() for key, value in detector(images).items()}
            for i in range(len(out["num_detections"])):
                results += coco_eval.detections(
                    info["image_id"][i], info["height"][i], info["width"][i], out["boxes"][i], out["scores"][i],
                    out["classes"][i], out["num_detections"][i], self.split.category_ids)
        return results

    def __call__(self, model):
        results = self.detect(model)
        self.last = (coco_eval.evaluate(self.ground_truth, results), results)
        # None (no ground truth at all) becomes NaN: never "best", a gap in the curves.
        return {key: float("nan") if self.last[0][key] is None else self.last[0][key]
                for key in ("map", "map50", "map75")}


def build_model(config, num_classes, backbone_weights=None):
    return ssdlite.build_ssdlite(config.backbone, num_classes=num_classes, input_size=config.input_size,
                                 alpha=config.alpha, reduced_tail=config.reduced_tail,
                                 backbone_weights=backbone_weights, weight_decay=config.weight_decay,
                                 bn_momentum=config.bn_momentum)


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warmup then cosine decay to 0, lrs scaled from batch 512 to ours."""
    scale = config.global_batch_size / REFERENCE_BATCH
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        config.warmup_learning_rate * scale, decay_steps=max(total - warmup, 1), alpha=0.0,
        warmup_target=config.learning_rate * scale, warmup_steps=warmup)


def main(config):
    config = resolve(config)
    strategy, policy = engine.setup(config)
    train_split, val_split = load_splits(config)
    num_classes = val_split.num_classes
    activation = "sigmoid" if config.loss == "focal" else "softmax"
    with strategy.scope():
        anchors = ssdlite.anchors_for(build_model(config, num_classes))
    val_ds = data.make_eval_pipeline(val_split, input_size=config.input_size, batch_size=config.eval_batch_size)
    evaluator = COCOEvaluator(val_split, val_ds, activation)
    run, chief = engine.open_run(config, strategy)
    steps_per_epoch = config.steps_per_epoch or schedules.steps_for(
        train_split.num_examples if train_split else 1, config.global_batch_size)

    def build():
        model = build_model(config, num_classes, config.backbone_weights)
        if config.weights:
            model.load_weights(config.weights)
        optimizer = keras.optimizers.SGD(learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum)
        loss = {"boxes": losses.BoxLoss(), "classes": losses.ClassLoss(config.loss)}
        return model, optimizer, loss, []

    if config.eval_only:
        with strategy.scope():
            model = build()[0]
        history = {}
    else:
        train_ds = data.make_train_pipeline(
            train_split, anchors, input_size=config.input_size, batch_size=config.global_batch_size,
            zoom_out=config.zoom_out, jitter=config.colour_jitter, shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic, seed=config.seed)
        model, history = engine.run_training(
            build=build, train_ds=train_ds, eval_ds=None, evaluate=evaluator, evaluate_every=config.eval_every,
            monitor="val_map", epochs=config.epochs, steps_per_epoch=steps_per_epoch, eval_steps=None, run=run,
            strategy=strategy, global_batch_size=config.global_batch_size, jit_compile=config.jit_compile,
            sync_batchnorm=config.sync_batchnorm, verbose=config_lib.keras_verbose(config.verbose))
    if not chief:
        return {}
    if evaluator.last is None:  # --eval-only, or a resumed finished run
        evaluator(model)
    results, detections = evaluator.last
    profile = mobilenet_tf.profile(model)
    metrics = dict(
        results, **engine.throughput(history, steps_per_epoch, config.global_batch_size),
        backbone=config.backbone, alpha=config.alpha, dataset=config.dataset, input_size=config.input_size,
        num_classes=num_classes, loss=config.loss, eval_images=val_split.num_examples, detections=len(detections),
        dropped_eval_boxes=evaluator.dropped_boxes, params=profile.params, madds=profile.madds,
        precision_policy=policy, replicas=strategy.num_replicas_in_sync)
    with open(run.path("detections.json"), "w") as f:
        json.dump(detections, f)
    with open(run.path("ground_truth.json"), "w") as f:
        json.dump(evaluator.ground_truth, f)
    if history:
        engine.plot_history(history, run.path("curves.png"), metric="map")
    save_detections(evaluator.detector(model), val_ds, val_split.class_names, run.path("detections.png"), config.display_threshold)
    engine.export_model(model, run)
    deploy.save_detector(model, run.path("detector"), activation=activation)
    for fmt in export.parse_formats(config.tflite, TFLITE_FORMATS):
        calibration = val_ds.map(lambda images, info: images).unbatch().batch(1).take(100)
        deploy.to_tflite_detector(model, run.path(f"detector_{fmt}.tflite"), quantization=fmt,
                                  representative_images=calibration, activation=activation)
    engine.write_metrics(run, metrics)
    shown = {key: "n/a" if results[key] is None else f"{results[key]:.4f}" for key in ("map", "map50", "map75")}
    print(f"COCO AP {shown['map']}  AP50 {shown['map50']}  AP75 {shown['map75']}  "
          f"({metrics['epochs']} epochs, {metrics['images_per_second']:.1f} img/s)  -> {run.root}")
    return metrics


def save_detections(detector, val_ds, class_names, path, threshold):
    images, info = next(iter(val_ds))
    out = {key: value.numpy() for key, value in detector(images).items()}
    visualize.save_grid(np.asarray(images), {key: np.asarray(info[key]) for key in ("boxes", "classes", "valid")},
                        out, class_names, path, threshold)


def get_args_parser():
    return config_lib.get_args_parser(Config)


if __name__ == "__main__":
    engine.recipe_main(main, Config)
