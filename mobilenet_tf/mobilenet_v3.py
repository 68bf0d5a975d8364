"""MobileNetV3-Large and -Small (Howard et al. 2019, arXiv:1905.02244).

The bodies are the paper's Tables 1 and 2 as data (kernel, exp size, #out, SE,
NL, s); the minimalistic variants (keras.applications / TF-slim: 3x3 kernels,
ReLU, no SE) are derived from them. Layer names are
keras.applications.MobileNetV3*'s, so its ImageNet weights load by name.
"""

import dataclasses

from mobilenet_tf import backbone, blocks, registry, weights as weights_lib
from mobilenet_tf._keras import layers
from mobilenet_tf.blocks import BlockNaming, BlockSpec


@dataclasses.dataclass(frozen=True)
class V3Architecture:
    """A V3 table: stem, bneck rows, the 1x1 conv before pooling and the one after.

    ``last_conv`` is given at width 1.0 and, as in keras.applications, scales as
    a multiple of the last block's channels (6x); ``last_point`` scales only
    for alpha > 1. The stem keeps 16 filters at every width (keras.applications).
    """

    stem_filters: int
    blocks: tuple
    last_conv: int
    last_point: int


def _bneck(kernel, exp, out, se, nl, stride):
    return BlockSpec(kernel=kernel, expanded=exp, filters=out, se=se,
                     activation={"RE": "relu", "HS": "hard_swish"}[nl], stride=stride)


# V3 paper Table 1 (MobileNetV3-Large): conv2d 3x3 16 HS s2, then bneck rows.
V3_LARGE = V3Architecture(
    stem_filters=16,
    blocks=(
        _bneck(3, 16, 16, False, "RE", 1),  # C1: stride 2
        _bneck(3, 64, 24, False, "RE", 2),
        _bneck(3, 72, 24, False, "RE", 1),  # C2: stride 4
        _bneck(5, 72, 40, True, "RE", 2),
        _bneck(5, 120, 40, True, "RE", 1),
        _bneck(5, 120, 40, True, "RE", 1),  # C3: stride 8
        _bneck(3, 240, 80, False, "HS", 2),
        _bneck(3, 200, 80, False, "HS", 1),
        _bneck(3, 184, 80, False, "HS", 1),
        _bneck(3, 184, 80, False, "HS", 1),
        _bneck(3, 480, 112, True, "HS", 1),
        _bneck(3, 672, 112, True, "HS", 1),  # C4: stride 16 (C4_expand: next block's 672)
        _bneck(5, 672, 160, True, "HS", 2),
        _bneck(5, 960, 160, True, "HS", 1),
        _bneck(5, 960, 160, True, "HS", 1),
    ),
    last_conv=960,  # conv2d 1x1, 960, HS = C5: stride 32
    last_point=1280,  # conv2d 1x1 after pooling, no BN, HS
)

# V3 paper Table 2 (MobileNetV3-Small).
V3_SMALL = V3Architecture(
    stem_filters=16,  # C1: stride 2
    blocks=(
        _bneck(3, 16, 16, True, "RE", 2),  # C2: stride 4
        _bneck(3, 72, 24, False, "RE", 2),
        _bneck(3, 88, 24, False, "RE", 1),  # C3: stride 8
        _bneck(5, 96, 40, True, "HS", 2),
        _bneck(5, 240, 40, True, "HS", 1),
        _bneck(5, 240, 40, True, "HS", 1),
        _bneck(5, 120, 48, True, "HS", 1),
        _bneck(5, 144, 48, True, "HS", 1),  # C4: stride 16 (C4_expand: next block's 288)
        _bneck(5, 288, 96, True, "HS", 2),
        _bneck(5, 576, 96, True, "HS", 1),
        _bneck(5, 576, 96, True, "HS", 1),
    ),
    last_conv=576,  # C5: stride 32
    last_point=1024,
)

NAMING = BlockNaming(first="expanded_conv_", other="expanded_conv_{}_", bn="_bn", act="_act")


def to_minimalistic(arch):
    """The minimalistic variant: 3x3 kernels, ReLU everywhere, no squeeze-excite."""
    return dataclasses.replace(arch, blocks=tuple(
        dataclasses.replace(row, kernel=min(row.kernel, 3), se=False, activation="relu")
        for row in arch.blocks
    ))


def reduce_tail(arch):
    """The paper's reduced tail (sections 6.2-6.3): last stage and head convs halved."""
    return V3Architecture(arch.stem_filters, blocks.reduce_tail(arch.blocks),
                          arch.last_conv // 2, arch.last_point // 2)


def feature_info(arch, alpha=1.0, reduced_tail=False, minimalistic=False):
    """``registry.FeatureInfo`` of a V3 built from ``arch``: C1..C4 the stages' last
    blocks (C1 of V3-Small: the stem), "C4_expand" the expansion feeding the first
    stride-32 block, "C5_block" the last block, C5 the 1x1 conv before pooling ("conv_1_act")."""
    if minimalistic:
        arch = to_minimalistic(arch)
    if reduced_tail:
        arch = reduce_tail(arch)
    layers = [(2, arch.stem_filters, "conv_act"),
              *backbone.inverted_residual_layers(arch.blocks, arch.stem_filters, arch.stem_filters, alpha, NAMING)]
    last = blocks.make_divisible(layers[-1][1] * (arch.last_conv / arch.blocks[-1].filters))
    return registry.walk_features(layers + [(1, last, "conv_1_act")], last_block=True)


def feature_info_large(alpha=1.0, reduced_tail=False, minimalistic=False):
    """``feature_info`` of ``mobilenet_v3_large``."""
    return feature_info(V3_LARGE, alpha, reduced_tail, minimalistic)


def feature_info_small(alpha=1.0, reduced_tail=False, minimalistic=False):
    """``feature_info`` of ``mobilenet_v3_small``."""
    return feature_info(V3_SMALL, alpha, reduced_tail, minimalistic)


def build_v3(
    arch, variant, *, input_shape, alpha, minimalistic, include_top, weights, input_tensor,
    classes, pooling, dropout_rate, classifier_activation, include_preprocessing,
    return_endpoints, output_stride, reduced_tail, name,
):
    """Shared builder of both V3 sizes; see ``mobilenet_v3_large`` for the arguments."""
    alpha = backbone.check_alpha(alpha)
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    if minimalistic:
        variant += "_minimalistic"
        arch = to_minimalistic(arch)
    weights_lib.check_weights_argument(
        weights, variant, alpha=alpha, include_top=include_top, classes=classes,
        channels=input_shape[2], reduced_tail=reduced_tail,
    )
    if reduced_tail:
        arch = reduce_tail(arch)
    act = "relu" if minimalistic else "hard_swish"

    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = blocks.conv_bn_act(x, arch.stem_filters, 3, stride, act, "conv", "conv_bn", "conv_act")
    x = backbone.inverted_residual_stack(x, arch.blocks, arch.stem_filters, alpha, walk, NAMING)
    walk.record(x, "_block")
    last_conv = blocks.make_divisible(x.shape[-1] * (arch.last_conv / arch.blocks[-1].filters))
    x = blocks.conv_bn_act(x, last_conv, 1, 1, act, "conv_1", "conv_1_bn", "conv_1_act")
    walk.record(x)

    def classifier(features):
        last_point = blocks.make_divisible(arch.last_point * max(alpha, 1.0))
        y = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling")(features)
        y = layers.Conv2D(last_point, 1, padding="same", use_bias=True, name="conv_2")(y)
        y = blocks.activation(y, act, "conv_2_act")
        if dropout_rate > 0:
            y = layers.Dropout(dropout_rate, name="dropout")(y)
        y = layers.Conv2D(classes, 1, padding="same", name="logits")(y)
        y = blocks.squeeze_pooled(y)
        return layers.Activation(classifier_activation, name="predictions", dtype="float32")(y)

    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, classifier=classifier,
        name=name or backbone.model_name(variant, alpha, input_shape),
    )
    weights_lib.load_weights(model, weights, variant, alpha=alpha, include_top=include_top, input_shape=input_shape)
    return model


def mobilenet_v3_large(
    input_shape=None,
    alpha=1.0,
    minimalistic=False,
    include_top=True,
    weights=None,
    input_tensor=None,
    classes=1000,
    pooling=None,
    dropout_rate=0.2,
    classifier_activation="softmax",
    include_preprocessing=True,
    return_endpoints=False,
    output_stride=32,
    reduced_tail=False,
    name=None,
):
    """MobileNetV3-Large as a functional ``keras.Model`` (V3 paper, Table 1).

    Args:
        input_shape: (height, width, channels), height/width >= 32 or None.
        alpha: width multiplier (published weights: 0.75, 1.0).
        minimalistic: 3x3 kernels, ReLU, no SE (published weights: alpha 1.0).
        include_top: add pool -> 1x1 conv 1280 -> h-swish -> dropout -> 1x1 conv.
        weights: None, "imagenet" (keras.applications' weights, downloaded) or a
            path to a ``.weights.h5`` file.
        input_tensor: optional Keras tensor to use as the input.
        classes: number of classes of the top.
        pooling: without the top: None (feature map), "avg" or "max".
        dropout_rate: dropout before the logits (paper text: 0.2; keras default).
        classifier_activation: activation of the top ("softmax", None, ...).
        include_preprocessing: take [0, 255] pixels and rescale to [-1, 1]
            inside the model (keras.applications' default for V3).
        return_endpoints: with ``include_top=False``, output a dict of feature
            maps; "C4_expand" is the 672-channel expansion of bneck 13 and "C5"
            the 960-channel conv before pooling, the SSDLite taps (paper 6.2).
        output_stride: 32, or 16 / 8 to dilate the last stage (LR-ASPP, 6.3).
        reduced_tail: halve the last stage and head convs (paper 6.2-6.3, "RF2").
        name: model name.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes) with the top, else
        (B, H/32, W/32, 960), pooled (B, 960), or a dict of endpoints.

    Example:
        >>> model = mobilenet_v3_large(input_shape=(320, 320, 3), include_top=False,
        ...                            return_endpoints=True, reduced_tail=True)
    """
    return build_v3(
        V3_LARGE, "v3_large", input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
        include_top=include_top, weights=weights, input_tensor=input_tensor, classes=classes,
        pooling=pooling, dropout_rate=dropout_rate, classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing, return_endpoints=return_endpoints,
        output_stride=output_stride, reduced_tail=reduced_tail, name=name,
    )


def mobilenet_v3_small(
    input_shape=None,
    alpha=1.0,
    minimalistic=False,
    include_top=True,
    weights=None,
    input_tensor=None,
    classes=1000,
    pooling=None,
    dropout_rate=0.2,
    classifier_activation="softmax",
    include_preprocessing=True,
    return_endpoints=False,
    output_stride=32,
    reduced_tail=False,
    name=None,
):
    """MobileNetV3-Small as a functional ``keras.Model`` (V3 paper, Table 2).

    Arguments as in ``mobilenet_v3_large``; the head is 1x1 conv 576 -> pool ->
    1x1 conv 1024. Endpoints: "C4_expand" is the 288-channel expansion of bneck
    9, "C5" the 576-channel conv before pooling.

    Example:
        >>> model = mobilenet_v3_small(alpha=0.75, input_shape=(128, 128, 3), classes=10)
    """
    return build_v3(
        V3_SMALL, "v3_small", input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
        include_top=include_top, weights=weights, input_tensor=input_tensor, classes=classes,
        pooling=pooling, dropout_rate=dropout_rate, classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing, return_endpoints=return_endpoints,
        output_stride=output_stride, reduced_tail=reduced_tail, name=name,
    )
