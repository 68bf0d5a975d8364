"""FaceNet-style embedding models on MobileNet backbones (V1 paper 4.7, Table 14).

    backbone (any registry name, width alpha) -> global average pooling -> dropout
      -> Dense(embedding_dim) -> L2 normalisation            (B, S, S, 3) -> (B, D), unit norm

FaceNet's settings: D = 128, embeddings on the unit hypersphere (so that squared
distances lie in [0, 4] and the triplet margin 0.2 has a fixed meaning). The
normalisation is ``L2Normalization``, a small weightless layer on TensorFlow ops
that works in Keras 3 and tf_keras, is registered for serialisation
(``keras.models.load_model`` needs ``import mobilenet_tf.heads.facenet``) and
converts to TFLite builtins. Not the stock ``UnitNormalization``: its epsilon
(1e-7 in Keras 3 on the squared norm, 1e-12 in tf_keras) dominates small vectors,
and an untrained model's embeddings are small (norm ~1e-8 for a V1: outputs of
norm ~1e-4 instead of 1).

The teacher of the distillation may be any embedding model; ``build_teacher``
also offers keras.applications networks (InceptionResNetV2, the closest stock
stand-in for FaceNet's Inception network) with the same head.
"""

import tensorflow as tf

import mobilenet_tf
from mobilenet_tf import backbone as backbone_lib
from mobilenet_tf._keras import keras, layers

EMBEDDING_LAYER = "embedding"
# keras.applications teachers: constructor, smallest input side, and the pixel
# scaling its ``preprocess_input`` applies (scale, offset), as a Rescaling layer.
KERAS_APPLICATIONS = {
    "inception_resnet_v2": ("InceptionResNetV2", 75, (1 / 127.5, -1.0)),
    "inception_v3": ("InceptionV3", 75, (1 / 127.5, -1.0)),
    "resnet50v2": ("ResNet50V2", 32, (1 / 127.5, -1.0)),
    "efficientnet_b0": ("EfficientNetB0", 32, (1.0, 0.0)),
}


@keras.saving.register_keras_serializable(package="mobilenet_tf.facenet")
class L2Normalization(layers.Layer):
    """``x / ||x||_2`` along the last axis, exact for vectors of any scale.

    The vector is first divided by its largest absolute component, so that its
    squared norm is in [1, D] and no epsilon can change it; then L2-normalised.
    (B, D) -> (B, D) with ``||e||_2 = 1`` (an all-zero vector stays zero; its
    gradient is the identity). Computes in float32 (distances between unit vectors
    need it). In a TFLite file the divisor's guard (GREATER, SELECT_V2) runs on
    TFLite's own kernels, outside XNNPACK; ``maximum(scale, tiny)`` would keep it on
    XNNPACK but give an all-zero vector a gradient of 1 / tiny.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        x = tf.cast(x, tf.float32)
        scale = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
        x = x / tf.where(scale > 0, scale, 1.0)  # (a scalar 1: no SHAPE / BROADCAST_TO ops)
        return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True), 1.0))

    def compute_output_shape(self, input_shape):
        return input_shape


def build_embedding_model(backbone="v1", alpha=1.0, input_size=160, embedding_dim=128, dropout_rate=0.2,
                          weights=None, name=None):
    """A face-embedding model: MobileNet -> pooled features -> unit-norm embedding.

    Args:
        backbone: a registry name (``mobilenet_tf.list_models()``), e.g. "v1"
            (the paper's student), "v3_large", "shufflenet_v2_x0_5": its last
            feature map, average-pooled, feeds the head.
        alpha: width multiplier (Table 14: 1.0, 0.75) of the families that take
            one; the others accept only None / 1.0 (their width is in the name).
        input_size: side of the square input (Table 14: 160, 128), >= 32.
        embedding_dim: embedding size D (FaceNet: 128).
        dropout_rate: dropout before the embedding layer, in [0, 1).
        weights: backbone weights: None, "imagenet" or a backbone ``.weights.h5``.
        name: model name (default ``facenet_<backbone>_<alpha>_<size>``).

    Returns:
        ``keras.Model``: float32 pixels in [0, 255], (B, S, S, 3) -> (B, D) with
        ``||e||_2 = 1``.

    Example:
        >>> student = build_embedding_model("v1", alpha=0.75, input_size=128)
    """
    input_size, embedding_dim, dropout_rate = _check_head(input_size, embedding_dim, dropout_rate)
    features, info = mobilenet_tf.registry.build_features(
        backbone, alpha=alpha, reduced_tail=False, input_shape=(input_size, input_size, 3), include_preprocessing=True,
        weights=weights)
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(features.output[list(info)[-1]])
    return _with_head(keras.Model(features.input, pooled), embedding_dim, dropout_rate,
                      name or f"facenet_{backbone}_{_alpha_tag(alpha)}_{input_size}")


def _alpha_tag(alpha):
    return f"{1.0 if alpha is None else alpha:g}"


def build_teacher(backbone="v1", alpha=1.0, input_size=160, embedding_dim=128, dropout_rate=0.2, weights=None):
    """The distillation teacher: ``build_embedding_model`` for a registry name, or a
    keras.applications network (``KERAS_APPLICATIONS``: "inception_resnet_v2", ...)
    with the same embedding head. ``alpha`` is ignored for keras.applications."""
    if backbone not in KERAS_APPLICATIONS:
        return build_embedding_model(backbone, alpha, input_size, embedding_dim, dropout_rate, weights,
                                     name=f"teacher_{backbone}_{_alpha_tag(alpha)}_{input_size}")
    input_size, embedding_dim, dropout_rate = _check_head(input_size, embedding_dim, dropout_rate)
    constructor, min_size, (scale, offset) = KERAS_APPLICATIONS[backbone]
    if input_size < min_size:
        raise ValueError(f"`input_size` {input_size} is too small for {backbone!r}: it needs >= {min_size}.")
    inputs = layers.Input((input_size, input_size, 3))
    network = getattr(keras.applications, constructor)(
        include_top=False, weights=weights, input_shape=(input_size, input_size, 3), pooling="avg")
    features = network(layers.Rescaling(scale, offset=offset, name="rescaling")(inputs))
    return _with_head(keras.Model(inputs, features), embedding_dim, dropout_rate, f"teacher_{backbone}_{input_size}")


def _check_head(input_size, embedding_dim, dropout_rate):
    input_size = backbone_lib.check_positive_int(input_size, "input_size", minimum=backbone_lib.MIN_INPUT_SIZE)
    embedding_dim = backbone_lib.check_positive_int(embedding_dim, "embedding_dim", minimum=2)
    if not 0 <= dropout_rate < 1:
        raise ValueError(f"`dropout_rate` must be in [0, 1); got {dropout_rate!r}.")
    return input_size, embedding_dim, float(dropout_rate)


def _with_head(features_model, embedding_dim, dropout_rate, name):
    """``features_model`` (B, S, S, 3) -> (B, C) followed by dropout, Dense(D), L2 norm."""
    x = features_model.output
    if dropout_rate > 0:
        x = layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    x = layers.Dense(embedding_dim, name=EMBEDDING_LAYER)(x)
    # float32 even under mixed precision: distances between unit vectors need it.
    x = L2Normalization(name="l2_normalize", dtype="float32")(x)
    return keras.Model(features_model.input, x, name=name)


def embedding_dim(model):
    """D of an embedding model's (B, D) output; ``ValueError`` for any other output."""
    shape = getattr(model, "output_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"an embedding model must output one (batch, D) tensor; {model.name!r} outputs {shape}.")
    return int(shape[-1])


def input_size(model):
    """The square input side S of a (B, S, S, 3) model; ``ValueError`` otherwise."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"an embedding model must take square RGB images (batch, S, S, 3); {model.name!r} takes "
                         f"{shape}.")
    return int(shape[1])
