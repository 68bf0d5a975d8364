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
optionally TFLite students (int8 calibrated on shuffled training faces:
``mobilenet_tf.training.recipe``'s rule).
"""

import dataclasses
import os
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf.heads.facenet import data, losses, model as model_lib, teacher as teacher_lib  # noqa: E402
from mobilenet_tf.heads.facenet import verification  # noqa: E402
from mobilenet_tf.training import config as config_lib, recipe, run_dir, schedules  # noqa: E402
from mobilenet_tf.training.fit import run_training  # noqa: E402
from mobilenet_tf.training.config import field  # noqa: E402

# Real data: FaceNet's settings where it states them (128-d unit embeddings,
# margin 0.2, semi-hard mining, AdaGrad at 0.05) and the V1 paper's student
# (1.0 MobileNet-160). FaceNet trains with ~40 faces per identity in batches of
# 1800; P x K = 45 x 4 = 180 is a tenth of that, what one accelerator holds.
REAL_DEFAULTS = dict(alpha=1.0, input_size=160, teacher_backbone="inception_resnet_v2", teacher_alpha=1.0,
                     teacher_epochs=50, epochs=50, identities_per_batch=45, images_per_identity=4,
                     optimizer="adagrad", learning_rate=0.05, teacher_learning_rate=0.05, triplet_weight=0.0,
                     bn_momentum=0.99, warmup_epochs=0.0)
# The synthetic default: a wide teacher and a half-width student at 64 px, CPU minutes.
# BN momentum 0.9: with a few hundred steps, 0.99's moving statistics would still
# hold much of their initial values at evaluation (measured: 0.50 vs 0.76 verification
# accuracy after the first epoch).
SYNTHETIC_DEFAULTS = dict(alpha=0.5, input_size=64, teacher_backbone="v1", teacher_alpha=1.0, teacher_epochs=8,
                          epochs=8, identities_per_batch=16, images_per_identity=4, optimizer="adam",
                          learning_rate=2e-3, teacher_learning_rate=2e-3, triplet_weight=0.0, bn_momentum=0.9,
                          warmup_epochs=1.0)
OPTIMIZERS = teacher_lib.OPTIMIZERS


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
    warmup_epochs: Optional[float] = field(None, "linear lr warmup from 0 before the cosine decay (teacher and "
                                                 "student)")
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


class FaceNetDistill(recipe.Recipe):
    """Face embeddings: a teacher (given or trained here), then the student distilled from its
    cached embeddings; both verified by the LFW 10-fold protocol."""

    Config = Config
    at_least_one = ("epochs", "teacher_epochs", "eval_every", "eval_batch_size", "embedding_dim")
    weights_text = "a student .weights.h5"
    monitor, plot_metric = "val_accuracy", "accuracy"
    tflite_name = "student"

    @classmethod
    def preset_label(cls, config):
        return "synthetic" if config.train_dir is None else "real data"

    @classmethod
    def validate(cls, config):
        mobilenet_tf.options_for(config.backbone, alpha=config.alpha)  # a width the family does not take
        if config.teacher_input_size is None:
            config = dataclasses.replace(config, teacher_input_size=config.input_size)
        if config.teacher is None and config.teacher_backbone not in model_lib.KERAS_APPLICATIONS:
            mobilenet_tf.registry.get_entry(config.teacher_backbone)
        for name in ("teacher", "weights", "pairs_file"):
            path = getattr(config, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"`--{name.replace('_', '-')}` {path!r} is not a file.")
        for name in ("train_dir", "lfw_dir", "eval_dir", "data_dir"):
            path = getattr(config, name)
            if path and not os.path.isdir(path):
                raise ValueError(f"`--{name.replace('_', '-')}` {path!r} is not a directory.")
        if config.train_dir is not None and not (config.data_dir or config.lfw_dir or config.eval_dir):
            raise ValueError("with --train-dir, say what to evaluate on: --data-dir (TFDS lfw), --lfw-dir (with "
                             "--pairs-file) or --eval-dir (held-out identity folders).")
        if config.warmup_epochs < 0:
            raise ValueError(f"`--warmup-epochs` must be >= 0, got {config.warmup_epochs}.")
        losses.check_loss_options(config.margin, config.mining, config.triplet_weight, config.distill_weight)
        return config

    def load_splits(self):
        config, replicas = self.config, self.strategy.num_replicas_in_sync
        # The given teacher and P x K first: a refusal comes before thousands of faces
        # are read or rendered.
        self.teacher = teacher_lib.load_teacher(config.teacher, config.embedding_dim)
        if (config.global_batch_size // replicas) % config.images_per_identity:
            raise ValueError(f"each of the {replicas} replicas must get whole identities: P x K / "
                             f"replicas = {config.global_batch_size / replicas:g} is not a multiple of K = "
                             f"{config.images_per_identity}; change --identities-per-batch.")
        if config.train_dir is None and not config.eval_only:  # synthetic: P x K checked before rendering
            data.check_identity_counts(data.synthetic_names(config.synthetic_train_identities),
                                       [config.synthetic_images_per_identity] * config.synthetic_train_identities,
                                       config.identities_per_batch, config.images_per_identity)
        train = None if config.eval_only else load_train(config)
        if train is not None:
            data.check_identity_batch(train, config.identities_per_batch, config.images_per_identity)
        self.pairs = load_pairs(config)
        return train, self.pairs.split

    def count_steps(self):
        train = self.train_split
        return self.config.steps_per_epoch or max(1, len(train) // self.config.global_batch_size
                                                  if train is not None else 1)

    def build_student(self):
        config = self.config
        student = model_lib.build_embedding_model(config.backbone, config.alpha, config.input_size,
                                                  config.embedding_dim, config.dropout_rate)
        if config.weights:
            student.load_weights(config.weights)
        return student

    def eval_only_model(self):
        with self.strategy.scope():
            return self.build_student()

    def train_embedding(self, directory, *, build_model, loss, train_ds, epochs, learning_rate):
        """Train an embedding model (teacher or student) into ``directory`` with the shared
        ``run_training``: cosine-decayed ``--optimizer``, verification accuracy on the pairs
        picks the best weights; returns (model, history)."""
        config, steps_per_epoch = self.config, self.steps_per_epoch

        def build():
            model = build_model()
            schedules.configure_batchnorm(model, momentum=config.bn_momentum)
            schedule = schedules.warmup_cosine(0.0, learning_rate, epochs, steps_per_epoch, config.warmup_epochs)
            return model, OPTIMIZERS[config.optimizer](schedule), loss, []

        run = self.run if directory == self.run.root else run_dir.RunDir(directory)
        return run_training(
            build=build, train_ds=train_ds, eval_ds=None, evaluate=teacher_lib.make_evaluate(
                self.pairs, config.eval_batch_size), evaluate_every=config.eval_every, monitor=self.monitor,
            epochs=epochs, steps_per_epoch=steps_per_epoch, eval_steps=None, run=run, strategy=self.strategy,
            global_batch_size=config.global_batch_size, options=config)

    def train(self):
        config, train = self.config, self.train_split
        self.teacher = self.teacher or teacher_lib.train_teacher(
            config, train, self.pairs, self.run.path("teacher"), chief=self.chief,
            train_embedding=lambda *args, **kwargs: self.train_embedding(*args, **kwargs)[0])
        targets = teacher_lib.teacher_embeddings(self.teacher, train, self.run.root, config.eval_batch_size,
                                                 write=self.chief) if config.distill_weight else None
        train_ds = data.identity_batches(train, config.identities_per_batch, config.images_per_identity,
                                         config.input_size, teacher_embeddings=targets, seed=config.seed + 1)
        loss = losses.FaceNetLoss(config.margin, config.mining, config.triplet_weight, config.distill_weight)
        return self.train_embedding(self.run.root, build_model=self.build_student, loss=loss, train_ds=train_ds,
                                    epochs=config.epochs, learning_rate=config.learning_rate)

    def final_metrics(self, model, history):
        config, pairs, teacher, train = self.config, self.pairs, self.teacher, self.train_split
        student_results = verification.verify(model, pairs, config.eval_batch_size)
        metrics = dict(_prefixed("student", student_results, model), backbone=config.backbone, alpha=config.alpha,
                       input_size=config.input_size, embedding_dim=config.embedding_dim,
                       num_pairs=int(len(pairs.same)), num_folds=pairs.num_folds,
                       eval_identities=pairs.split.num_identities)
        self.curves = {"student": student_results["roc"]}
        if teacher is not None:
            teacher_results = verification.verify(teacher, pairs, config.eval_batch_size)
            metrics.update(_prefixed("teacher", teacher_results, teacher), teacher_name=teacher.name)
            self.curves["teacher"] = teacher_results["roc"]
        if train is not None:
            metrics.update(train_images=len(train), train_identities=train.num_identities, skipped=train.skipped)
        return metrics

    def profiled_model(self, model):
        return None  # metrics.json has student_params / teacher_params instead

    def write_outputs(self, model, metrics):
        verification.plot_roc(self.curves, self.run.path("roc.png"))

    def calibration_images(self, split, count):
        indices = np.random.default_rng(self.config.seed).permutation(len(split))[:count]
        return data.image_batches(split, self.config.input_size, 1, indices)

    def summary(self, metrics):
        gap = f", teacher {metrics['teacher_accuracy']:.4f}" if self.teacher is not None else ""
        return (f"student accuracy {metrics['student_accuracy']:.4f}{gap}  VAL@FAR=1e-3 "
                f"{metrics['student_val_at_far_1e-3']:.4f}  " + super().summary(metrics))


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


def _prefixed(prefix, results, model):
    """metrics.json entries of one model: accuracy, VAL@FAR, AUC, params, MAdds."""
    profile = mobilenet_tf.profile(model)
    entries = {key: value for key, value in results.items()
               if key not in ("roc", "distances", "same", "num_pairs", "num_folds")}
    entries.update(params=profile.params, madds=profile.madds)
    return {f"{prefix}_{key}": value for key, value in entries.items()}


Config, resolve, main, get_args_parser, cli = recipe.script(FaceNetDistill)

if __name__ == "__main__":
    cli()
