"""Building blocks shared by every MobileNet: the only copies.

Everything here is made of stock Keras layers present in both Keras 3 and tf_keras
(no ``keras.ops``, no Lambda, no custom layers), so models save without
``custom_objects`` and rebuild unchanged under ``TF_USE_LEGACY_KERAS=1``.
Layers that hold weights take the names keras.applications gives them (the
caller passes them in); that is what lets ImageNet weights transfer by name.
"""

import dataclasses

from mobilenet_tf._keras import layers

# One BatchNormalization setting for every backbone. epsilon is keras.applications'
# (it changes outputs, so transferred weights need it); momentum 0.99 is the
# MobileNetV3 paper's "batch-norm decay 0.99" (keras.applications uses 0.999, which
# only changes how fast moving statistics follow during training).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

ACTIVATIONS = ("relu", "relu6", "hard_swish", "gelu")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One row of a paper's architecture table.

    Attributes:
        kernel: depthwise kernel size (3 or 5).
        expanded: channels the depthwise conv runs on, at width 1.0 (the V3
            tables' "exp size"; for V2 ``t * input channels``; for V1 the input
            channels, since V1 does not expand).
        filters: output channels at width 1.0.
        se: whether a squeeze-and-excite follows the depthwise conv (V3).
        activation: one of ``ACTIVATIONS``.
        stride: stride of the depthwise conv (1 or 2).
    """

    kernel: int
    expanded: int
    filters: int
    se: bool
    activation: str
    stride: int


@dataclasses.dataclass(frozen=True)
class BlockNaming:
    """keras.applications' layer-name scheme for one inverted-residual family.

    ``first`` is the prefix of block 0, ``other`` a format string for block i>0.
    ``bn`` and ``act`` are the suffixes of its BatchNormalization and activation
    layers ("_BN"/"_relu" in V2, "_bn" in V3; V3's activation names are ours,
    keras.applications leaves them to auto-naming).
    """

    first: str
    other: str
    bn: str
    act: str

    def prefix(self, block_id):
        return self.first if block_id == 0 else self.other.format(block_id)


def reduce_tail(rows):
    """Halve the channels of a table's last stage (its last stride-2 row and after).

    The V3 paper's "reduced tail" (sections 6.2-6.3: channels between C4 and C5
    cut by 2, "RF2"); torchvision's ``_reduced_tail``. The first row of the
    stage still expands its full-width input, so only later rows halve
    ``expanded``.
    """
    start = max(i for i, row in enumerate(rows) if row.stride > 1)
    return tuple(
        row if i < start else dataclasses.replace(
            row, filters=row.filters // 2, expanded=row.expanded if i == start else row.expanded // 2
        )
        for i, row in enumerate(rows)
    )


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% down.

    The papers' reference rule (TF-slim ``_make_divisible``, keras.applications
    ``_depth``); every width in this package goes through it.

    >>> make_divisible(32 * 0.35), make_divisible(16 * 0.75), make_divisible(1280 * 1.4)
    (16, 16, 1792)
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


HARD_SIGMOID_GATE = "_relu6"  # hard_sigmoid's ReLU6: name + this


def hard_sigmoid(x, name):
    """h-sigmoid(x) = ReLU6(x + 3) / 6 (V3 paper eq. 2), from stock layers.

    ``name`` is the name of the last layer (the / 6); helpers get ``name + "_shift"``
    and ``name + "_relu6"``.
    """
    x = layers.Rescaling(1.0, offset=3.0, name=name + "_shift")(x)
    x = layers.ReLU(6.0, name=name + HARD_SIGMOID_GATE)(x)
    return layers.Rescaling(1.0 / 6.0, name=name)(x)


HARD_SWISH_GATE, HARD_SWISH_SCALED = "_gate", "_scaled"  # hard_swish's helper layers: name + these


def hard_swish(x, name):
    """h-swish(x) = x * ReLU6(x + 3) / 6 (V3 paper section 5.2), from stock layers,
    computed as (x / 6) * ReLU6(x + 3).

    That order is chosen for int8: written x * (ReLU6(x + 3) / 6), the TFLite
    converter fuses it into one HARD_SWISH op, which XNNPACK runs in float but
    not in int8; every h-swish then split the int8 graph between XNNPACK and
    TFLite's own kernels (21 partitions in V3-Small), making int8 2.6x slower
    than fp32. In this form all of it stays in XNNPACK (int8 V3-Small 1.28 ms vs
    4.22 ms at 224, 2 threads: ``benchmarks/deploy.py``); float TFLite files are converted from the
    fused layout (``export.fuse_hard_swish``), int8 files from x * ReLU6(x + 3) with the
    1/6 in the next kernels (``export.fold_hard_swish_scale``). Helpers are ``name + "_shift"``
    (x + 3), ``name + "_gate"`` (ReLU6) and ``name + "_scaled"`` (x / 6).
    """
    gate = layers.Rescaling(1.0, offset=3.0, name=name + "_shift")(x)
    gate = layers.ReLU(6.0, name=name + HARD_SWISH_GATE)(gate)
    scaled = layers.Rescaling(1.0 / 6.0, name=name + HARD_SWISH_SCALED)(x)
    return layers.Multiply(name=name)([scaled, gate])


def squeeze_pooled(x, name="flatten"):
    """(B, 1, 1, C) -> (B, C), the classifier's last step, as a mean over the single
    position: TFLite converts it to a MEAN that XNNPACK runs, while ``Flatten`` /
    ``Reshape`` read the batch size at run time (SHAPE, STRIDED_SLICE, PACK ops, which
    XNNPACK leaves to TFLite's kernels: a second partition)."""
    return layers.GlobalAveragePooling2D(name=name)(x)


def activation(x, kind, name):
    """Apply ``kind`` (one of ``ACTIVATIONS``, or None for none) as a layer called ``name``."""
    if kind is None:
        return x
    if kind == "relu":
        return layers.ReLU(name=name)(x)
    if kind == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if kind == "hard_swish":
        return hard_swish(x, name)
    if kind == "gelu":  # exact (erf) GELU, MobileNetV4 Hybrid-L's
        return layers.Activation("gelu", name=name)(x)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}.")


def batch_norm(x, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def conv_bn_act(x, filters, kernel, stride, kind, conv_name, bn_name, act_name, groups=1, dilation_rate=1):
    """Conv2D (no bias, ``groups`` groups, "same" padding) -> BatchNormalization ->
    activation ``kind`` (None: no activation).

    Shapes: (B, H, W, C) -> (B, ceil(H / stride), ceil(W / stride), filters).
    """
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", groups=groups, dilation_rate=dilation_rate,
        use_bias=False, name=conv_name
    )(x)
    x = batch_norm(x, bn_name)
    return activation(x, kind, act_name)


def depthwise_bn_act(x, kernel, stride, dilation, kind, name, bn_name, act_name, depth_multiplier=1):
    """DepthwiseConv2D (no bias, "same" padding) -> BatchNormalization -> activation
    ``kind`` (None: no activation).

    "same" padding equals keras.applications' explicit ZeroPadding2D + "valid"
    padding wherever the input size is known (and V1's at even sizes), also works
    for unknown sizes and dilation, and converts to one TFLite op instead of two.
    """
    x = layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        dilation_rate=dilation,
        depth_multiplier=depth_multiplier,
        padding="same",
        use_bias=False,
        name=name,
    )(x)
    x = batch_norm(x, bn_name)
    return activation(x, kind, act_name)


def depthwise_separable(x, filters, kernel, stride, dilation, block_id, depth_multiplier=1):
    """MobileNetV1 block (V1 paper Figure 3): dw 3x3-BN-ReLU6 then 1x1-BN-ReLU6.

    Shapes: (B, H, W, C) -> (B, H / stride, W / stride, filters).
    Layer names are keras.applications.MobileNet's: conv_dw_{i}, conv_pw_{i}, ...
    """
    x = depthwise_bn_act(
        x, kernel, stride, dilation, "relu6",
        f"conv_dw_{block_id}", f"conv_dw_{block_id}_bn", f"conv_dw_{block_id}_relu",
        depth_multiplier=depth_multiplier,
    )
    return conv_bn_act(
        x, filters, 1, 1, "relu6",
        f"conv_pw_{block_id}", f"conv_pw_{block_id}_bn", f"conv_pw_{block_id}_relu",
    )


def squeeze_excite(x, squeeze_filters, prefix):
    """Squeeze-and-excite as in MobileNetV3 (V3 paper Figure 4).

    Global average pool -> 1x1 conv to ``squeeze_filters`` -> ReLU -> 1x1 conv
    back to C -> h-sigmoid -> multiply with the input. Shape preserved:
    (B, H, W, C) -> (B, H, W, C).
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "squeeze_excite_avg_pool")(x)
    s = layers.Conv2D(squeeze_filters, 1, padding="same", name=prefix + "squeeze_excite_conv")(s)
    s = layers.ReLU(name=prefix + "squeeze_excite_relu")(s)
    s = layers.Conv2D(channels, 1, padding="same", name=prefix + "squeeze_excite_conv_1")(s)
    s = hard_sigmoid(s, prefix + "squeeze_excite_hsigmoid")
    return layers.Multiply(name=prefix + "squeeze_excite_mul")([x, s])


def inverted_residual(
    x, expanded, filters, spec, stride, dilation, block_id, naming, residual
):
    """Inverted residual with linear bottleneck (V2 paper Figure 3c; V3 Figure 4).

    [1x1 expand-BN-act] -> kxk depthwise-BN-act -> [SE] -> 1x1 project-BN
    (linear) -> [+ input]. The expansion is skipped when ``expanded`` equals the
    input channels, as in both papers' first block.

    Args:
        x: (B, H, W, C_in) tensor.
        expanded: channels after the expansion (already width-scaled).
        filters: output channels (already width-scaled).
        spec: the table row (kernel, se, activation are read from it).
        stride, dilation: of the depthwise conv; may differ from ``spec.stride``
            when an output stride turns strides into dilation.
        block_id: index into ``naming``.
        naming: the family's ``BlockNaming``.
        residual: add the input to the output.

    Returns:
        ``(output, expansion)``: output (B, H / stride, W / stride, filters); the
        expansion activation (B, H, W, expanded), which SSDLite taps as C4_expand.
    """
    prefix = naming.prefix(block_id)
    inputs = x
    if expanded != x.shape[-1]:
        x = layers.Conv2D(expanded, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = batch_norm(x, prefix + "expand" + naming.bn)
        x = activation(x, spec.activation, prefix + "expand" + naming.act)
    expansion = x
    x = depthwise_bn_act(
        x, spec.kernel, stride, dilation, spec.activation,
        prefix + "depthwise", prefix + "depthwise" + naming.bn, prefix + "depthwise" + naming.act,
    )
    if spec.se:
        x = squeeze_excite(x, make_divisible(expanded * 0.25), prefix)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = batch_norm(x, prefix + "project" + naming.bn)
    if residual:
        x = layers.Add(name=prefix + "add")([inputs, x])
    return x, expansion
