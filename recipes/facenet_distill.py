"""Distil a FaceNet-style teacher into a MobileNet face embedding (V1 paper 4.7, Table 14).

    python recipes/facenet_distill.py          # synthetic identities, CPU, minutes: teacher, student, LFW-style eval
    python recipes/facenet_distill.py --train-dir faces/train --teacher teacher.keras \\
        --data-dir ~/tensorflow_datasets --output-dir runs/face
    python recipes/facenet_distill.py --train-dir faces/train --lfw-dir lfw --pairs-file pairs.txt   # official pairs
    python recipes/facenet_distill.py --help

Steps: (1) the teacher: ``--teacher model.keras`` (any Keras model mapping faces
to embeddings), or trained here with FaceNet's triplet loss (semi-hard mining,
margin 0.2) on ``--teacher-backbone`` (a wider MobileNet, or a keras.applications
network such as inception_resnet_v2, FaceNet's closest stock relative); a trained
teacher is kept in ``teacher/`` and reused when the run resumes. (2) The
teacher's embeddings of every training image, computed once and cached
(``teacher_embeddings.npy``). (3) The student (V1 by default, as the paper),
trained on ``distill_weight * ||student - teacher||^2 + triplet_weight * triplet``
with P identities x K images per batch. (4) Both evaluated by the LFW 10-fold
protocol: accuracy with thresholds from the other folds, VAL at FAR 1e-3 and
1e-4 (Table 14's "1e-4 accuracy").

Data: ``--train-dir`` is a folder of identity subfolders of aligned face crops
(VGGFace2, CASIA-WebFace); evaluation is TFDS ``lfw`` (``--data-dir``) with
pairs generated deterministically, LFW's image folder (``--lfw-dir``, found in
the TFDS download when not given) with the official ``--pairs-file``, or a
folder of held-out identities (``--eval-dir``). With none of them the synthetic
identities of ``mobilenet_tf.data.identities`` are used (train and eval
identities disjoint).

The run directory gets config.json, teacher/ (its checkpoints and
teacher.keras when trained here), the student's checkpoints, TensorBoard logs,
history.csv, metrics.json, roc.png, curves.png, model.keras, saved_model/ and
optionally TFLite students.
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
from mobilenet_tf.data import image_check  # noqa: E402
from mobilenet_tf.heads.facenet import data, losses, model as model_lib, verification  # noqa: E402
from mobilenet_tf.training import config as config_lib, engine, schedules, strategy as strategy_lib  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

# Real data: FaceNet's settings where it states them (128-d unit embeddings,
# margin 0.2, semi-hard mining, AdaGrad at 0.05) and the V1 paper's student
# (1.0 MobileNet-160). FaceNet trains with ~40 faces per identity in batches of
# 1800; P x K = 45 x 4 = 180 is a tenth of that, what one accelerator holds.
REAL_DEFAULTS = dict(alpha=1.0, input_size=160, teacher_backbone="inception_resnet_v2", teacher_alpha=1.0,
                     teacher_epochs=50, epochs=50, identities_per_batch=45, images_per_identity=4,
                     optimizer="adagrad", learning_rate=0.05, teacher_learning_rate=0.05, triplet_weight=0.0,
                     bn_momentum=0.99)
# The synthetic default: a wide teacher and a half-width student at 64 px, CPU minutes.
# BN momentum 0.9: with a few hundred steps, 0.99's moving statistics would still
# hold much of their initial values at evaluation (measured: 0.50 vs 0.76 verification
# accuracy after the first epoch).
SYNTHETIC_DEFAULTS = dict(alpha=0.5, input_size=64, teacher_backbone="v1", teacher_alpha=1.0, teacher_epochs=8,
                          epochs=8, identities_per_batch=16, images_per_identity=4, optimizer="adam",
                          learning_rate=2e-3, teacher_learning_rate=2e-3, triplet_weight=0.0, bn_momentum=0.9)
OPTIMIZERS = {"adagrad": keras.optimizers.Adagrad, "adam": keras.optimizers.Adam,
              "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9)}


@dataclasses.dataclass
class Config(config_lib.RunOptions):
    """Distil a FaceNet-style teacher into a MobileNet face embedding (V1 paper 4.7)."""

    # What a None field takes: "real data" with --train-dir, else "synthetic" (the help lists these values).
    PRESETS = {"real data": REAL_DEFAULTS, "synthetic": SYNTHETIC_DEFAULTS}

    backbone: str = field("v1", "student backbone (registry name)")
    alpha: Optional[float] = field(None, "student width multiplier")
    input_size: Optional[int] = field(None, "student input side")
    embedding_dim: int = field(128, "embedding size (FaceNet: 128)")
    dropout_rate: float = field(0.2, "dropout before the embedding layer")
    teacher: Optional[str] = field(None, "a Keras model file mapping faces to embeddings; else one is trained here")
    teacher_backbone: Optional[str] = field(None, "teacher trained here: a registry name or one of "
                                                  f"{sorted(model_lib.KERAS_APPLICATIONS)}")
    teacher_alpha: Optional[float] = field(None, "teacher width multiplier, registry backbones")
    teacher_input_size: Optional[int] = field(None, "teacher input side", default_text="--input-size")
    teacher_weights: Optional[str] = field(None, "teacher backbone init: 'imagenet' or a .weights.h5")
    teacher_epochs: Optional[int] = field(None, "teacher training epochs")
    teacher_learning_rate: Optional[float] = field(None, "teacher lr (with --optimizer)")
    epochs: Optional[int] = field(None, "student epochs")
    steps_per_epoch: Optional[int] = field(None, "training steps per epoch",
                                           default_text="training images / (P x K)")
    identities_per_batch: Optional[int] = field(None, "P identities per batch")
    images_per_identity: Optional[int] = field(None, "K images per identity")
    optimizer: Optional[str] = field(None, "adagrad (FaceNet) | adam | sgd", choices=list(OPTIMIZERS))
    learning_rate: Optional[float] = field(None, "student lr, cosine-decayed")
    bn_momentum: Optional[float] = field(None, "BatchNormalization momentum")
    margin: float = field(losses.FACENET_MARGIN, "triplet margin (FaceNet 0.2)")
    mining: str = field("semi_hard", "triplet mining", choices=list(losses.MINING))
    distill_weight: float = field(1.0, "weight of ||student - teacher||^2 (V1 paper: the whole loss)")
    triplet_weight: Optional[float] = field(None, "weight of the student's triplet loss")
    train_dir: Optional[str] = field(None, "folder of identity subfolders of face crops",
                                     default_text="synthetic identities")
    data_dir: Optional[str] = field(None, "TFDS data dir: evaluate on TFDS lfw")
    lfw_dir: Optional[str] = field(None, "LFW image folder (Name/Name_0001.jpg) for --pairs-file")
    pairs_file: Optional[str] = field(None, "LFW's official pairs.txt (View 2, 10 folds)")
    eval_dir: Optional[str] = field(None, "evaluate on a folder of held-out identities (pairs generated)")
    check_images: bool = field(True, "decode every training image first; unreadable ones are skipped and listed "
                                                "in skipped_files.txt")
    synthetic_train_identities: int = field(1000, "synthetic training identities")
    synthetic_images_per_identity: int = field(4, "synthetic training images per identity")
    synthetic_eval_identities: int = field(100, "synthetic evaluation identities (disjoint from training's)")
    synthetic_eval_images_per_identity: int = field(10, "synthetic evaluation images per identity")
    eval_every: int = field(1, "evaluate every N epochs and after the last")
    eval_batch_size: int = field(64, "embedding batch size")
    tflite: str = field("", "also export the student to TFLite: comma list of fp32, float16, dynamic, int8")
    output_dir: str = field("runs/facenet", "run directory")
    weights: Optional[str] = field(None, "a student .weights.h5 to start from / evaluate (--eval-only)")

    @property
    def global_batch_size(self):
        """P x K, the batch over all replicas (what ``engine.setup`` checks)."""
        return self.identities_per_batch * self.images_per_identity


def resolve(config):
    """Fill every None with the data's default; check inputs early."""
    synthetic = config.train_dir is None
    preset = dict(SYNTHETIC_DEFAULTS if synthetic else REAL_DEFAULTS)
    mobilenet_tf.registry.get_entry(config.backbone)  # unknown name -> ValueError
    if not mobilenet_tf.registry.accepts(config.backbone, "alpha"):
        preset["alpha"] = 1.0  # the preset's width is the MobileNets'; other families have theirs in the name
    resolved = dataclasses.replace(config, **{key: value for key, value in preset.items()
                                              if getattr(config, key) is None})
    mobilenet_tf.options_for(resolved.backbone, alpha=resolved.alpha)  # a width the family does not take
    if resolved.teacher_input_size is None:
        resolved = dataclasses.replace(resolved, teacher_input_size=resolved.input_size)
    mobilenet_tf.registry.get_entry(resolved.backbone)  # unknown name -> ValueError
    if resolved.teacher is None and resolved.teacher_backbone not in model_lib.KERAS_APPLICATIONS:
        mobilenet_tf.registry.get_entry(resolved.teacher_backbone)
    for name in ("epochs", "teacher_epochs", "eval_every", "eval_batch_size", "embedding_dim"):
        if getattr(resolved, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(resolved, name)}.")
    for name in ("teacher", "weights", "pairs_file"):
        path = getattr(resolved, name)
        if path and not os.path.isfile(path):
            raise ValueError(f"`--{name.replace('_', '-')}` {path!r} is not a file.")
    for name in ("train_dir", "lfw_dir", "eval_dir", "data_dir"):
        path = getattr(resolved, name)
        if path and not os.path.isdir(path):
            raise ValueError(f"`--{name.replace('_', '-')}` {path!r} is not a directory.")
    if resolved.eval_only and not resolved.weights:
        raise ValueError("`--eval-only` needs --weights (a student .weights.h5).")
    if not synthetic and not (resolved.data_dir or resolved.lfw_dir or resolved.eval_dir):
        raise ValueError("with --train-dir, say what to evaluate on: --data-dir (TFDS lfw), --lfw-dir (with "
                         "--pairs-file) or --eval-dir (held-out identity folders).")
    losses.check_loss_options(resolved.margin, resolved.mining, resolved.triplet_weight, resolved.distill_weight)
    export.parse_formats(resolved.tflite)
    return resolved


def load_train(config):
    if config.train_dir is None:
        return data.synthetic_split(config.synthetic_train_identities, config.synthetic_images_per_identity,
                                    config.input_size, training=True, seed=config.seed)
    return data.folder_split(config.train_dir, check_images=config.check_images, strict=config.strict_data)


def load_pairs(config):
    """Verification pairs: official pairs.txt, an eval folder, TFDS lfw, or synthetic."""
    if config.pairs_file:
        lfw_dir = config.lfw_dir or data.find_lfw_folder(config.data_dir)
        if lfw_dir is None:
            raise ValueError("--pairs-file needs LFW's image folder: pass --lfw-dir (or a --data-dir whose TFDS "
                             "lfw download is still extracted).")
        return data.read_pairs_file(config.pairs_file, data.lfw_folder_split(lfw_dir, strict=config.strict_data))
    if config.eval_dir:
        return data.make_pairs(data.folder_split(config.eval_dir, strict=config.strict_data), seed=config.seed)
    if config.lfw_dir:
        return data.make_pairs(data.lfw_folder_split(config.lfw_dir, strict=config.strict_data), seed=config.seed)
    if config.data_dir:
        return data.make_pairs(data.lfw_split(config.data_dir), seed=config.seed)
    split = data.synthetic_split(config.synthetic_eval_identities, config.synthetic_eval_images_per_identity,
                                 config.input_size, training=False, seed=config.seed)
    return data.make_pairs(split, seed=config.seed)


def make_evaluate(pairs, batch_size):
    """``model -> {accuracy, tar_at_far_1e-3}`` for the engine's per-epoch evaluation
    (logged as ``val_accuracy``, ``val_tar_at_far_1e-3``: TAR is FaceNet's VAL)."""
    def evaluate(model):
        results = verification.verify(model, pairs, batch_size)
        return {"accuracy": results["accuracy"], "tar_at_far_1e-3": results["val_at_far_1e-3"]}
    return evaluate


def train_embedding(config, *, build_model, loss, train_ds, steps_per_epoch, epochs, learning_rate, run, strategy,
                    pairs):
    """Train an embedding model with ``engine.run_training``; returns (model, history)."""
    def build():
        model = build_model()
        schedules.configure_batchnorm(model, momentum=config.bn_momentum)
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
        return model, OPTIMIZERS[config.optimizer](schedule), loss, []

    return engine.run_training(
        build=build, train_ds=train_ds, eval_ds=None, evaluate=make_evaluate(pairs, config.eval_batch_size),
        evaluate_every=config.eval_every, monitor="val_accuracy", epochs=epochs, steps_per_epoch=steps_per_epoch,
        eval_steps=None, run=run, strategy=strategy, global_batch_size=config.global_batch_size,
        jit_compile=config.jit_compile, sync_batchnorm=config.sync_batchnorm,
        verbose=config_lib.keras_verbose(config.verbose))


def load_teacher(config):
    """The ``--teacher`` model, checked against the student's embedding size; None without one."""
    if not config.teacher:
        return None
    teacher = keras.models.load_model(config.teacher, compile=False)
    dim = model_lib.embedding_dim(teacher)
    model_lib.input_size(teacher)
    if dim != config.embedding_dim:
        raise ValueError(f"the teacher {config.teacher!r} embeds into {dim} dimensions but the student into "
                         f"{config.embedding_dim}: pass --embedding-dim {dim} (distillation matches the "
                         "embeddings coordinate by coordinate).")
    return teacher


def train_teacher(config, train, pairs, run, strategy, steps_per_epoch):
    """A teacher trained here with the triplet loss in ``teacher/``; a finished one
    (``teacher/teacher.keras``, e.g. from an interrupted run) is reused."""
    saved = os.path.join(run.root, "teacher", "teacher.keras")
    if os.path.exists(saved):
        return keras.models.load_model(saved, compile=False)
    teacher_run = engine.RunDir(os.path.join(run.root, "teacher"))
    os.makedirs(teacher_run.root, exist_ok=True)
    train_ds = data.identity_batches(train, config.identities_per_batch, config.images_per_identity,
                                     config.teacher_input_size, seed=config.seed)
    teacher, _ = train_embedding(
        config, loss=losses.FaceNetLoss(config.margin, config.mining, triplet_weight=1.0),
        build_model=lambda: model_lib.build_teacher(config.teacher_backbone, config.teacher_alpha,
                                                    config.teacher_input_size, config.embedding_dim,
                                                    config.dropout_rate, config.teacher_weights),
        train_ds=train_ds, steps_per_epoch=steps_per_epoch, epochs=config.teacher_epochs,
        learning_rate=config.teacher_learning_rate, run=teacher_run, strategy=strategy, pairs=pairs)
    if strategy_lib.is_chief(strategy):
        teacher.save(saved)
    return teacher


def teacher_embeddings(config, teacher, train, run, chief):
    """(N, D) unit-norm teacher embeddings of the training images, cached in the run dir
    (``teacher_embeddings.npy``) with the teacher's fingerprint, so a resumed run with
    another teacher recomputes them."""
    path, fingerprint_path = run.path("teacher_embeddings.npy"), run.path("teacher_fingerprint.json")
    fingerprint = {"name": teacher.name, "images": len(train),
                   "weights_sum": float(sum(np.sum(np.asarray(w, np.float64)) for w in teacher.get_weights()))}
    if os.path.exists(path) and os.path.exists(fingerprint_path):
        with open(fingerprint_path) as f:
            if json.load(f) == fingerprint:
                return np.load(path)
    size = model_lib.input_size(teacher)
    embeddings = verification.embed(teacher, data.image_batches(train, size, config.eval_batch_size))
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    if chief:
        np.save(path, embeddings)
        with open(fingerprint_path, "w") as f:
            json.dump(fingerprint, f)
    return embeddings


def main(config):
    config = resolve(config)
    strategy, policy = engine.setup(config)
    batch = config.global_batch_size
    if (batch // strategy.num_replicas_in_sync) % config.images_per_identity:
        raise ValueError(f"each of the {strategy.num_replicas_in_sync} replicas must get whole identities: P x K / "
                         f"replicas = {batch / strategy.num_replicas_in_sync:g} is not a multiple of K = "
                         f"{config.images_per_identity}; change --identities-per-batch.")
    train = None if config.eval_only else load_train(config)
    if train is not None:
        data.check_identity_batch(train, config.identities_per_batch, config.images_per_identity)
    pairs = load_pairs(config)
    teacher = load_teacher(config)
    run, chief = engine.open_run(config, strategy)
    # Folder data was decoded file by file while loading: list what was skipped.
    check = image_check.merged([train.check if train is not None else None, pairs.split.check])
    if chief and check is not None:
        print(image_check.write_skipped(check, run.root), flush=True)
    steps_per_epoch = config.steps_per_epoch or max(1, len(train) // batch if train is not None else 1)

    def build_student():
        student = model_lib.build_embedding_model(config.backbone, config.alpha, config.input_size,
                                                  config.embedding_dim, config.dropout_rate)
        if config.weights:
            student.load_weights(config.weights)
        return student

    if config.eval_only:
        with strategy.scope():
            student = build_student()
        history = {}
    else:
        teacher = teacher or train_teacher(config, train, pairs, run, strategy, steps_per_epoch)
        targets = teacher_embeddings(config, teacher, train, run, chief) if config.distill_weight else None
        train_ds = data.identity_batches(train, config.identities_per_batch, config.images_per_identity,
                                         config.input_size, teacher_embeddings=targets, seed=config.seed + 1)
        loss = losses.FaceNetLoss(config.margin, config.mining, config.triplet_weight, config.distill_weight)
        student, history = train_embedding(
            config, build_model=build_student, loss=loss, train_ds=train_ds, steps_per_epoch=steps_per_epoch,
            epochs=config.epochs, learning_rate=config.learning_rate, run=run, strategy=strategy, pairs=pairs)
    if not chief:
        return {}

    student_results = verification.verify(student, pairs, config.eval_batch_size)
    metrics = dict(_prefixed("student", student_results, student), **engine.throughput(
        history, steps_per_epoch, batch), backbone=config.backbone, alpha=config.alpha, input_size=config.input_size,
        embedding_dim=config.embedding_dim, num_pairs=int(len(pairs.same)), num_folds=pairs.num_folds,
        eval_identities=pairs.split.num_identities, precision_policy=policy, replicas=strategy.num_replicas_in_sync)
    curves = {"student": student_results["roc"]}
    if teacher is not None:
        teacher_results = verification.verify(teacher, pairs, config.eval_batch_size)
        metrics.update(_prefixed("teacher", teacher_results, teacher), teacher_name=teacher.name)
        curves["teacher"] = teacher_results["roc"]
    if train is not None:
        metrics.update(train_images=len(train), train_identities=train.num_identities, skipped=train.skipped)
    verification.plot_roc(curves, run.path("roc.png"))
    if history:
        engine.plot_history(history, run.path("curves.png"), metric="accuracy")
    engine.export_model(student, run)
    for fmt in export.parse_formats(config.tflite):
        calibration = data.image_batches(pairs.split, config.input_size, 1, np.unique(pairs.first)[:200])
        export.to_tflite(student, run.path(f"student_{fmt}.tflite"), export.FORMATS[fmt], calibration)
    engine.write_metrics(run, metrics)
    gap = f", teacher {metrics['teacher_accuracy']:.4f}" if teacher is not None else ""
    print(f"student accuracy {metrics['student_accuracy']:.4f}{gap}  VAL@FAR=1e-3 "
          f"{metrics['student_val_at_far_1e-3']:.4f}  ({metrics['epochs']} epochs, "
          f"{metrics['images_per_second']:.1f} img/s)  -> {run.root}")
    return metrics


def _prefixed(prefix, results, model):
    """metrics.json entries of one model: accuracy, VAL@FAR, AUC, params, MAdds."""
    profile = mobilenet_tf.profile(model)
    entries = {key: value for key, value in results.items()
               if key not in ("roc", "distances", "same", "num_pairs", "num_folds")}
    entries.update(params=profile.params, madds=profile.madds)
    return {f"{prefix}_{key}": value for key, value in entries.items()}


def get_args_parser():
    return config_lib.get_args_parser(Config)


if __name__ == "__main__":
    engine.recipe_main(main, Config)
