"""The papers' training schedules: optimizer, learning rate, regularisation.

``--schedule v1|v2|v3``. All three use RMSProp (rho 0.9, momentum 0.9) with a
staircase exponential decay, linear scaling of the learning rate by global batch
size (``lr = base_lr * global_batch / reference_batch``) and an optional linear
warmup. Readings of the papers, where they are terse:

- v1 (V1 paper 3.2: "RMSprop ... similar to Inception V3"): Inception-V3's recipe,
  lr 0.045 decayed x0.94 every 2 epochs, RMSProp epsilon 1.0, at its 50 x 32 batch;
  weight decay 4e-5, none on depthwise kernels ("little or no weight decay").
- v2 (V2 paper 6.1): lr 0.045 x0.98 every epoch, weight decay 4e-5, batch 96 on each
  of 16 GPUs (1536), epsilon 1.0 (TF-slim's default); dropout 0.2 (slim keep 0.8).
- v3 (V3 paper 6.1): lr 0.1 at batch 4096, "decay rate 0.01 every 3 epochs" read
  as lr x0.99 every 3 epochs; dropout 0.2, L2 1e-5, weight EMA 0.9999, BN decay
  0.99 (built into the backbones); epsilon 1e-3 and a 5-epoch warmup as in the
  TPU reference implementation of this recipe family.

MobileNetV4 (``--schedule v4_conv_small`` ... ``v4_hybrid_large``, the default for those
models): TF Model Garden's experiment configs (``imagenet_mobilenetv4_*_tpu.yaml``):
AdamW (decoupled weight decay 0.01-0.2, none on BatchNormalization), a linear warmup
of 1560 steps (5 epochs at batch 4096, 20 at 16384) from 0, then cosine decay to 0;
(Hybrid-L: to 0.1% of the peak); label smoothing 0.1, dropout, stochastic depth
(Conv-L: one flat rate for every block, the others Model Garden's linear rule),
RandAugment (magnitude 9 or 15, each op kept with probability 0.5 / 0.7 / 1; ``data.augment``),
mixup / cutmix for Conv-L and Hybrid-L (a batch mixed with probability 0.2 / 0.3), and
for Conv-S only an L2 of 1e-5, weight EMA 0.9999, AdamW beta_1 0.6 / epsilon 1e-6 and
BatchNormalization epsilon 1e-6. The AdamW learning rate is not scaled with the batch:
Model Garden sets it per batch size.

Weight decay is an L2 penalty in the loss, as in the papers' TF-slim code:
``weight_decay * sum(w^2) / 2`` (slim's ``l2_regularizer``), on conv and dense
kernels, never on depthwise kernels, BatchNormalization or biases. All three
use label smoothing 0.1 (Inception-V3's, kept by the TPU recipes).
"""

import dataclasses
import math
from typing import Optional

from mobilenet_tf._keras import keras
from mobilenet_tf.walkers import add_weight_decay, configure_batchnorm, flat_layers  # noqa: F401 (re-exported)


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    base_lr: float
    reference_batch: int
    decay_rate: float
    decay_epochs: float
    warmup_epochs: float
    weight_decay: float
    rmsprop_epsilon: float
    dropout: float
    ema: float  # 0: no weight EMA
    label_smoothing: float
    epochs: int  # length of a full ImageNet run
    bn_momentum: float = 0.99
    optimizer: str = "rmsprop"  # "adamw": AdamW with cosine decay after the warmup (no staircase decay)
    adamw_decay: float = 0.0  # AdamW's decoupled weight decay (not on BatchNormalization)
    adamw_beta_1: float = 0.9
    adamw_epsilon: float = 1e-7
    stochastic_depth: float = 0.0  # MobileNetV4's ``stochastic_depth_rate``
    flat_stochastic_depth: bool = False  # the same rate for every block (else the linear rule)
    cosine_floor: float = 0.0  # AdamW: the cosine ends at this fraction of the peak lr
    bn_epsilon: Optional[float] = None  # BatchNormalization epsilon (None: the backbone's)
    randaugment: float = 0.0  # RandAugment magnitude on Model Garden's 0-10 scale; 0: off
    randaugment_prob: Optional[float] = None  # each RandAugment op kept with this probability
    randaugment_translate: int = 10  # RandAugment translation in pixels at magnitude 10
    mix_prob: float = 0.0  # probability that a batch gets mixup or cutmix; 0: off


SCHEDULES = {
    "v1": Schedule("v1", 0.045, 1600, 0.94, 2, 0, 4e-5, 1.0, 1e-3, 0.0, 0.1, 200),
    "v2": Schedule("v2", 0.045, 1536, 0.98, 1, 0, 4e-5, 1.0, 0.2, 0.0, 0.1, 300),
    "v3": Schedule("v3", 0.1, 4096, 0.99, 3, 5, 1e-5, 1e-3, 0.2, 0.9999, 0.1, 600),
}


def _v4(name, lr, batch, warmup, l2, dropout, ema, epochs, bn_momentum, decay, stochastic_depth, randaugment,
        randaugment_prob, **options):
    return Schedule(name, lr, batch, 1.0, 1, warmup, l2, 1e-7, dropout, ema, 0.1, epochs, bn_momentum,
                    optimizer="adamw", adamw_decay=decay, stochastic_depth=stochastic_depth,
                    randaugment=randaugment, randaugment_prob=randaugment_prob, **options)


# Model Garden's official/vision/configs/experiments/image_classification/imagenet_mobilenetv4_*_tpu.yaml
SCHEDULES.update({s.name: s for s in (
    _v4("v4_conv_small", 0.002, 4096, 5, 1e-5, 0.3, 0.9999, 9600, 0.95, 0.01, 0.0, 9, 0.5, adamw_beta_1=0.6,
        adamw_epsilon=1e-6, bn_epsilon=1e-6, randaugment_translate=20),
    _v4("v4_conv_medium", 0.004, 4096, 5, 0.0, 0.2, 0.0, 500, 0.997, 0.1, 0.075, 15, 0.7),
    _v4("v4_conv_large", 0.004, 16384, 20, 0.0, 0.2, 0.0, 500, 0.997, 0.2, 0.2, 15, None,
        flat_stochastic_depth=True, mix_prob=0.2),
    _v4("v4_hybrid_medium", 0.016, 16384, 20, 0.0, 0.2, 0.0, 500, 0.997, 0.1, 0.075, 15, 0.7),
    _v4("v4_hybrid_large", 0.01, 16384, 20, 0.0, 0.2, 0.0, 500, 0.997, 0.2, 0.35, 15, None,
        mix_prob=0.3, cosine_floor=0.001),
)})


def default_schedule(model):
    """The schedule a model trains with unless told: its own (MobileNetV4), else "v3"."""
    return model if model in SCHEDULES else "v3"


def get_schedule(name):
    if name not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {sorted(SCHEDULES)}; got {name!r}.")
    return SCHEDULES[name]


@keras.saving.register_keras_serializable(package="mobilenet_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * decay_rate ** floor(epoch / decay_epochs), after a linear
    warmup from 0 over ``warmup_epochs`` (epoch = step / steps_per_epoch)."""

    def __init__(self, peak_lr, steps_per_epoch, decay_rate, decay_epochs, warmup_epochs=0.0):
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay_rate = float(decay_rate)
        self.decay_epochs = float(decay_epochs)
        self.warmup_epochs = float(warmup_epochs)

    def __call__(self, step):
        epoch = keras.ops.cast(step, "float32") / self.steps_per_epoch
        lr = self.peak_lr * keras.ops.power(self.decay_rate, keras.ops.floor(epoch / self.decay_epochs))
        if self.warmup_epochs > 0:
            lr = lr * keras.ops.minimum(1.0, epoch / self.warmup_epochs)
        return lr

    def get_config(self):
        return dict(peak_lr=self.peak_lr, steps_per_epoch=self.steps_per_epoch, decay_rate=self.decay_rate,
                    decay_epochs=self.decay_epochs, warmup_epochs=self.warmup_epochs)


def warmup_cosine(start_lr, peak_lr, epochs, steps_per_epoch, warmup_epochs, floor=0.0):
    """Linear warmup from ``start_lr`` to ``peak_lr`` over ``warmup_epochs`` (at most all
    but the last step), then cosine decay to ``floor * peak_lr`` at ``epochs * steps_per_epoch``."""
    total = epochs * steps_per_epoch
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(start_lr, decay_steps=max(total - warmup, 1), alpha=floor,
                                                  warmup_target=peak_lr, warmup_steps=warmup)


def scaled_lr(schedule, global_batch_size, base_lr=None):
    """Linear scaling rule: the schedule's lr at its reference batch, scaled to ours
    (AdamW schedules: the lr as given, unscaled)."""
    lr = base_lr if base_lr is not None else schedule.base_lr
    return lr if schedule.optimizer == "adamw" else lr * global_batch_size / schedule.reference_batch


def make_optimizer(schedule, *, peak_lr, steps_per_epoch, warmup_epochs=None, ema=None, epochs=None):
    """RMSProp with the schedule's decay, warmup and weight EMA; AdamW schedules: AdamW
    with warmup + cosine decay to the schedule's floor at ``epochs`` (default: the
    schedule's) and decoupled weight decay, BatchNormalization's gamma / beta excluded."""
    warmup = schedule.warmup_epochs if warmup_epochs is None else warmup_epochs
    ema = schedule.ema if ema is None else ema
    if schedule.optimizer == "adamw":
        lr = warmup_cosine(0.0, peak_lr, epochs or schedule.epochs, steps_per_epoch, warmup, schedule.cosine_floor)
        optimizer = keras.optimizers.AdamW(
            learning_rate=lr, weight_decay=schedule.adamw_decay, beta_1=schedule.adamw_beta_1,
            epsilon=schedule.adamw_epsilon, use_ema=ema > 0, ema_momentum=ema if ema > 0 else 0.99)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta"])
        return optimizer
    lr = WarmupStepDecay(peak_lr, steps_per_epoch, schedule.decay_rate, schedule.decay_epochs, warmup)
    return keras.optimizers.RMSprop(
        learning_rate=lr, rho=0.9, momentum=0.9, epsilon=schedule.rmsprop_epsilon,
        use_ema=ema > 0, ema_momentum=ema if ema > 0 else 0.99,
    )


def steps_for(num_examples, global_batch_size):
    return max(1, math.ceil(num_examples / global_batch_size))
