"""MobileNetV4 (Qin et al. 2024, arXiv:2404.10518): Conv-S/M/L and Hybrid-M/L.

The block tables are TF Model Garden's (``official/vision/modeling/backbones/
mobilenet.py``, ``MNV4*_BLOCK_SPECS``) as data, row for row; timm's
``_gen_mobilenet_v4`` describes the same networks parameter for parameter. Rows:

- ``ConvBN``: conv -> BN -> act (the stem, Conv-S's first stages).
- ``FusedIB``: k x k expansion conv (strided) -> BN -> act -> 1x1 projection -> BN.
- ``UIB``, the Universal Inverted Bottleneck (paper section 3.2): optional start
  depthwise (BN, no activation) -> 1x1 expansion -> optional middle depthwise (BN,
  act; it carries the stride) -> 1x1 projection (BN) -> [layer scale] -> [+ input].
  Start and middle kernels (0 = absent) make it ExtraDW (k, k'), IB (0, k),
  ConvNeXt-like (k, 0) or FFN (0, 0).
- ``MQA``, Mobile multi-query attention (section 3.3): BN pre-norm -> query 1x1
  (``heads * key_dim``); key and value each from an optional stride-2 3x3 depthwise +
  BN, then a 1x1 to ``key_dim`` (one key and one value shared by every head) ->
  attention (``v4_layers.MultiQueryAttention``) -> 1x1 output -> [layer scale] -> + input.

Every model ends with 1x1 conv 960 (C5) -> global pool -> 1x1 conv 1280 with BN
and act -> dropout -> Dense. The hybrids use layer scale (init 1e-5) in every UIB
and MQA block; Hybrid-L uses GELU everywhere, the others ReLU. Layer names follow
timm's stages (``stage{s}_{b}_*`` is timm's ``blocks.{s}.{b}``; a stage starts at
each stride-2 row), so checkpoint conversion is a name map.

Padding: "same" (TF, the default) pads stride-2 convolutions asymmetrically;
"symmetric" pads ``k // 2`` on every side first, as PyTorch and timm do, which is
what a converted timm checkpoint needs to give timm's outputs.
"""

import dataclasses
import os
from typing import Union

from mobilenet_tf import backbone, blocks, registry, timm_weights, weights as weights_lib
from mobilenet_tf._keras import layers
from mobilenet_tf.v4_layers import LayerScale, MultiQueryAttention, StochasticDepth

PADDINGS = ("same", "symmetric")
LAYER_SCALE_INIT = 1e-5
LAST_CONV, LAST_POINT = 960, 1280  # every variant's head: 1x1 conv 960 (C5), pool, 1x1 conv 1280


@dataclasses.dataclass(frozen=True)
class ConvBN:
    kernel: int
    stride: int
    filters: int


@dataclasses.dataclass(frozen=True)
class FusedIB:
    kernel: int
    stride: int
    filters: int
    expand: float = 4.0


@dataclasses.dataclass(frozen=True)
class UIB:
    start_dw: int  # 0: no start depthwise
    middle_dw: int  # 0: no middle depthwise
    stride: int
    filters: int
    expand: float = 4.0


@dataclasses.dataclass(frozen=True)
class MQA:
    heads: int
    key_dim: int  # = value_dim in every V4 table
    kv_stride: int
    filters: int
    stride: int = 1
    kv_kernel: int = 3  # depthwise kernel of the key / value downsampling


Row = Union[ConvBN, FusedIB, UIB, MQA]


@dataclasses.dataclass(frozen=True)
class V4Architecture:
    """A V4 table: the stem's filters, the rows after it, the activation and
    whether UIB / MQA blocks end in layer scale."""

    stem_filters: int
    blocks: tuple
    activation: str = "relu"
    layer_scale: bool = False


# Model Garden MNV4ConvSmall_BLOCK_SPECS (after the stem conv 3x3 s2 32).
CONV_SMALL = V4Architecture(32, (
    ConvBN(3, 2, 32), ConvBN(1, 1, 32),
    ConvBN(3, 2, 96), ConvBN(1, 1, 64),
    UIB(5, 5, 2, 96, 3.0), *[UIB(0, 3, 1, 96, 2.0)] * 4, UIB(3, 0, 1, 96, 4.0),
    UIB(3, 3, 2, 128, 6.0), UIB(5, 5, 1, 128, 4.0), UIB(0, 5, 1, 128, 4.0), UIB(0, 5, 1, 128, 3.0),
    UIB(0, 3, 1, 128, 4.0), UIB(0, 3, 1, 128, 4.0),
))

# _mnv4_conv_medium_block_specs.
CONV_MEDIUM = V4Architecture(32, (
    FusedIB(3, 2, 48),
    UIB(3, 5, 2, 80, 4.0), UIB(3, 3, 1, 80, 2.0),
    UIB(3, 5, 2, 160, 6.0), UIB(3, 3, 1, 160, 4.0), UIB(3, 3, 1, 160, 4.0), UIB(3, 5, 1, 160, 4.0),
    UIB(3, 3, 1, 160, 4.0), UIB(3, 0, 1, 160, 4.0), UIB(0, 0, 1, 160, 2.0), UIB(3, 0, 1, 160, 4.0),
    UIB(5, 5, 2, 256, 6.0), UIB(5, 5, 1, 256, 4.0), UIB(3, 5, 1, 256, 4.0), UIB(3, 5, 1, 256, 4.0),
    UIB(0, 0, 1, 256, 4.0), UIB(3, 0, 1, 256, 4.0), UIB(3, 5, 1, 256, 2.0), UIB(5, 5, 1, 256, 4.0),
    UIB(0, 0, 1, 256, 4.0), UIB(0, 0, 1, 256, 4.0), UIB(5, 0, 1, 256, 2.0),
))

# MNV4ConvLarge_BLOCK_SPECS (stem 24 filters).
CONV_LARGE = V4Architecture(24, (
    FusedIB(3, 2, 48),
    UIB(3, 5, 2, 96), UIB(3, 3, 1, 96),
    UIB(3, 5, 2, 192), *[UIB(3, 3, 1, 192)] * 3, UIB(3, 5, 1, 192), *[UIB(5, 3, 1, 192)] * 5, UIB(3, 0, 1, 192),
    UIB(5, 5, 2, 512), *[UIB(5, 5, 1, 512)] * 3, UIB(5, 0, 1, 512), UIB(5, 3, 1, 512), *[UIB(5, 0, 1, 512)] * 2,
    UIB(5, 3, 1, 512), UIB(5, 5, 1, 512), *[UIB(5, 0, 1, 512)] * 3,
))

_MQA_M14, _MQA_M7 = MQA(4, 64, 2, 160), MQA(4, 64, 1, 256)  # Hybrid-M: at 14x14 (kv stride 2) and 7x7
# _mnv4_hybrid_medium_block_specs.
HYBRID_MEDIUM = V4Architecture(32, (
    FusedIB(3, 2, 48),
    UIB(3, 5, 2, 80, 4.0), UIB(3, 3, 1, 80, 2.0),
    UIB(3, 5, 2, 160, 6.0), UIB(0, 0, 1, 160, 2.0), UIB(3, 3, 1, 160, 4.0), UIB(3, 5, 1, 160, 4.0),
    _MQA_M14, UIB(3, 3, 1, 160, 4.0), _MQA_M14, UIB(3, 0, 1, 160, 4.0),
    _MQA_M14, UIB(3, 3, 1, 160, 4.0), _MQA_M14, UIB(3, 0, 1, 160, 4.0),
    UIB(5, 5, 2, 256, 6.0), UIB(5, 5, 1, 256, 4.0), UIB(3, 5, 1, 256, 4.0), UIB(3, 5, 1, 256, 4.0),
    UIB(0, 0, 1, 256, 2.0), UIB(3, 5, 1, 256, 2.0), UIB(0, 0, 1, 256, 2.0), UIB(0, 0, 1, 256, 4.0),
    _MQA_M7, UIB(3, 0, 1, 256, 4.0), _MQA_M7, UIB(5, 5, 1, 256, 4.0),
    _MQA_M7, UIB(5, 0, 1, 256, 4.0), _MQA_M7, UIB(5, 0, 1, 256, 4.0),
), layer_scale=True)

_MQA_L14, _MQA_L7 = MQA(8, 48, 2, 192), MQA(8, 64, 1, 512)
# _mnv4_hybrid_large_block_specs (GELU everywhere, stem 24 filters).
HYBRID_LARGE = V4Architecture(24, (
    FusedIB(3, 2, 48),
    UIB(3, 5, 2, 96), UIB(3, 3, 1, 96),
    UIB(3, 5, 2, 192), *[UIB(3, 3, 1, 192)] * 3, UIB(3, 5, 1, 192), UIB(5, 3, 1, 192), UIB(5, 3, 1, 192),
    _MQA_L14, UIB(5, 3, 1, 192), _MQA_L14, UIB(5, 3, 1, 192),
    _MQA_L14, UIB(5, 3, 1, 192), _MQA_L14, UIB(3, 0, 1, 192),
    UIB(5, 5, 2, 512), *[UIB(5, 5, 1, 512)] * 3, UIB(5, 0, 1, 512), UIB(5, 3, 1, 512), *[UIB(5, 0, 1, 512)] * 2,
    UIB(5, 3, 1, 512), UIB(5, 5, 1, 512),
    _MQA_L7, UIB(5, 0, 1, 512), _MQA_L7, UIB(5, 0, 1, 512), _MQA_L7, UIB(5, 0, 1, 512), _MQA_L7, UIB(5, 0, 1, 512),
), activation="gelu", layer_scale=True)

ARCHITECTURES = {"conv_small": CONV_SMALL, "conv_medium": CONV_MEDIUM, "conv_large": CONV_LARGE,
                 "hybrid_medium": HYBRID_MEDIUM, "hybrid_large": HYBRID_LARGE}
# The resolution each variant was designed and trained at (paper Table 9 / timm's configs).
NATIVE_RESOLUTION = {"conv_small": 224, "conv_medium": 256, "conv_large": 384, "hybrid_medium": 256,
                     "hybrid_large": 384}


def _prefixes(rows):
    """``stage{s}_{b}_`` per row: a stage starts at each stride-2 row (timm's ``blocks.{s}.{b}``)."""
    stage, index = -1, 0
    for row in rows:
        if row.stride > 1:
            stage, index = stage + 1, 0
        yield f"stage{stage}_{index}_"
        index += 1


def feature_info(variant):
    """``registry.FeatureInfo`` of ``mobilenet_v4(variant)``: C1..C4 the last
    block at strides 2..16, C5 the 1x1 conv 960 before pooling ("conv_1_act")."""
    arch = ARCHITECTURES[variant]
    rows = [(2, arch.stem_filters, "stem_act")]
    channels = arch.stem_filters
    for row, prefix in zip(arch.blocks, _prefixes(arch.blocks)):
        rows.append((row.stride, row.filters, _block_output_name(row, prefix, channels, arch.layer_scale)))
        channels = row.filters
    return registry.walk_features(rows + [(1, LAST_CONV, "conv_1_act")])


def _residual(row, in_channels):
    """Whether ``row``'s block adds its input: MQA always, FusedIB / UIB when the row
    keeps the stride and the channels, ConvBN never."""
    if isinstance(row, MQA):
        return True
    return not isinstance(row, ConvBN) and row.stride == 1 and in_channels == row.filters


def _block_output_name(row, prefix, in_channels, layer_scale):
    """The name of the layer ``_Layers.block`` ends ``row``'s block with."""
    if isinstance(row, ConvBN):
        return prefix + "conv_act"
    if _residual(row, in_channels):
        return prefix + "add"
    if isinstance(row, UIB) and layer_scale:
        return prefix + "layer_scale"
    return prefix + "project_bn"


class _Layers:
    """The layer factory of one build: padding rule, activation, layer scale, BN epsilon
    and each block's stochastic depth rate; ``block`` builds one table row."""

    def __init__(self, padding, activation, layer_scale, bn_epsilon, drop_rates):
        self.padding, self.act, self.layer_scale, self.bn_epsilon = padding, activation, layer_scale, bn_epsilon
        self.drop_rates = drop_rates  # {block prefix: stochastic depth rate}

    def bn(self, x, name):
        return layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=blocks.BN_MOMENTUM, name=name)(x)

    def conv(self, x, filters, kernel, stride, name, dilation=1, depthwise=False):
        """Conv2D / DepthwiseConv2D without bias; stride-2 "symmetric" padding pads
        ``kernel // 2`` on every side, then convolves "valid"."""
        padding = "same"
        if self.padding == "symmetric" and stride > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
            padding = "valid"
        if depthwise:
            return layers.DepthwiseConv2D(kernel, strides=stride, dilation_rate=dilation, padding=padding,
                                          use_bias=False, name=name)(x)
        return layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation, padding=padding,
                             use_bias=False, name=name)(x)

    def conv_bn(self, x, filters, kernel, stride, name, act=True, dilation=1, depthwise=False):
        """conv -> BN (``name`` + "_bn") -> [the model's activation (``name`` + "_act")]."""
        x = self.conv(x, filters, kernel, stride, name, dilation, depthwise)
        x = self.bn(x, name + "_bn")
        return blocks.activation(x, self.act, name + "_act") if act else x

    def end(self, x, inputs, residual, prefix):
        """[layer scale] -> [+ inputs, the branch dropped per example at the block's
        stochastic depth rate in training]."""
        if self.layer_scale:
            x = LayerScale(LAYER_SCALE_INIT, name=prefix + "layer_scale")(x)
        if not residual:
            return x
        rate = self.drop_rates.get(prefix, 0.0)
        if rate > 0:
            return StochasticDepth(rate, name=prefix + "add")([inputs, x])
        return layers.Add(name=prefix + "add")([inputs, x])

    def conv_block(self, x, row, stride, dilation, prefix):
        return self.conv_bn(x, row.filters, row.kernel, stride, prefix + "conv", dilation=dilation)

    def fused_ib(self, x, row, stride, dilation, prefix):
        inputs = x
        x = self.conv_bn(x, blocks.make_divisible(x.shape[-1] * row.expand), row.kernel, stride, prefix + "expand",
                         dilation=dilation)
        x = self.conv_bn(x, row.filters, 1, 1, prefix + "project", act=False)
        if _residual(row, inputs.shape[-1]):
            x = layers.Add(name=prefix + "add")([inputs, x])
        return x

    def uib(self, x, row, stride, dilation, prefix):
        """The stride goes to the middle depthwise (to the start one when there is none)."""
        inputs = x
        if row.start_dw:
            x = self.conv_bn(x, None, row.start_dw, 1 if row.middle_dw else stride, prefix + "start_dw", act=False,
                             dilation=dilation, depthwise=True)
        x = self.conv_bn(x, blocks.make_divisible(inputs.shape[-1] * row.expand), 1, 1, prefix + "expand")
        if row.middle_dw:
            x = self.conv_bn(x, None, row.middle_dw, stride, prefix + "middle_dw", dilation=dilation, depthwise=True)
        x = self.conv_bn(x, row.filters, 1, 1, prefix + "project", act=False)
        return self.end(x, inputs, _residual(row, inputs.shape[-1]), prefix)

    def mqa(self, x, row, stride, dilation, prefix):
        inputs = x
        x = self.bn(x, prefix + "norm")
        query = self.conv(x, row.heads * row.key_dim, 1, 1, prefix + "query")

        def shared(kind):  # the key or the value: one for all heads, optionally downsampled
            y = x
            if row.kv_stride > 1:
                y = self.conv_bn(y, None, row.kv_kernel, row.kv_stride, prefix + kind + "_down", act=False,
                                 depthwise=True)
            return self.conv(y, row.key_dim, 1, 1, prefix + kind)

        y = MultiQueryAttention(row.heads, row.key_dim, name=prefix + "attention")(
            [query, shared("key"), shared("value")])
        y = self.conv(y, inputs.shape[-1], 1, 1, prefix + "output")
        return self.end(y, inputs, _residual(row, inputs.shape[-1]), prefix)

    def block(self, x, row, stride, dilation, prefix):
        build = {ConvBN: self.conv_block, FusedIB: self.fused_ib, UIB: self.uib, MQA: self.mqa}[type(row)]
        return build(x, row, stride, dilation, prefix)


def mobilenet_v4(
    variant="conv_small",
    input_shape=None,
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
    padding=None,
    stochastic_depth_rate=0.0,
    flat_stochastic_depth=False,
    name=None,
):
    """MobileNetV4 as a functional ``keras.Model``.

    Args:
        variant: one of ``ARCHITECTURES`` ("conv_small", "conv_medium",
            "conv_large", "hybrid_medium", "hybrid_large").
        input_shape, include_top, input_tensor, pooling, classes,
        classifier_activation, include_preprocessing, return_endpoints, name:
            as in ``mobilenet_v3_large``.
        weights: None, a ``.weights.h5`` file, or timm's ``.safetensors`` checkpoint
            of this variant (``timm_weights``: then padding defaults to "symmetric",
            BN epsilon is timm's 1e-5 and ``include_preprocessing`` normalises with
            ImageNet's mean / std, timm's conventions).
        dropout_rate: dropout before the classifier (Model Garden's configs: 0.2-0.3).
        output_stride: 32, or 16 / 8 to dilate the last stages.
        padding: "same" (TF; the default) or "symmetric" (PyTorch / timm: ``k // 2``
            on every side of a stride-2 convolution; the default with timm weights).
        stochastic_depth_rate: in training, drop each UIB / MQA residual branch per
            example with probability ``rate * (i + 1) / n`` for row i of n, and
            ``rate`` for MQA rows, Model Garden's rule (its configs: 0.075 Conv-M /
            Hybrid-M, 0.2 Conv-L, 0.35 Hybrid-L); 0 (the default) builds plain
            ``Add`` layers.
        flat_stochastic_depth: every branch gets ``rate`` (Model Garden's Conv-L).

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes) with the top (1x1 conv 960
        -> pool -> 1x1 conv 1280 + BN + act -> dropout -> Dense), else the
        (B, H/32, W/32, 960) map, pooled (B, 960), or endpoints C1..C5.

    Example:
        >>> model = mobilenet_v4("hybrid_medium", input_shape=(256, 256, 3))
    """
    if variant not in ARCHITECTURES:
        raise ValueError(f"`variant` must be one of {sorted(ARCHITECTURES)}; got {variant!r}.")
    timm_file = isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".safetensors")
    padding = padding or ("symmetric" if timm_file else "same")
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}; got {padding!r}.")
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    registry_name = "v4_" + variant
    state = timm_weights.read_safetensors(os.fspath(weights)) if timm_file else None
    weights_lib.check_weights_argument(None if timm_file else weights, registry_name, alpha=1.0,
                                       include_top=include_top, classes=classes, channels=input_shape[2])
    if isinstance(stochastic_depth_rate, bool) or not isinstance(stochastic_depth_rate, (int, float)) \
            or not 0 <= stochastic_depth_rate < 1:
        raise ValueError(f"`stochastic_depth_rate` must be a number in [0, 1); got {stochastic_depth_rate!r}.")
    arch = ARCHITECTURES[variant]
    drop_rates = {prefix: stochastic_depth_rate if flat_stochastic_depth or isinstance(row, MQA)
                  else stochastic_depth_rate * (i + 1) / len(arch.blocks)
                  for i, (row, prefix) in enumerate(zip(arch.blocks, _prefixes(arch.blocks)))}
    make = _Layers(padding, arch.activation, arch.layer_scale,
                   timm_weights.TIMM_BN_EPSILON if timm_file else blocks.BN_EPSILON, drop_rates)
    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing and not timm_file)
    if include_preprocessing and timm_file:  # [0, 255] -> timm's ImageNet normalisation
        x = layers.Normalization(mean=[255 * m for m in timm_weights.TIMM_MEAN],
                                 variance=[(255 * s) ** 2 for s in timm_weights.TIMM_STD], name="normalization")(x)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = make.conv_bn(x, arch.stem_filters, 3, stride, "stem")
    for row, prefix in zip(arch.blocks, _prefixes(arch.blocks)):
        stride, dilation = walk.block(x, row.stride)
        x = make.block(x, row, stride, dilation, prefix)
    x = make.conv_bn(x, LAST_CONV, 1, 1, "conv_1")
    walk.record(x)

    def classifier(features):
        y = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling")(features)
        y = make.conv_bn(y, LAST_POINT, 1, 1, "conv_2")
        y = blocks.squeeze_pooled(y)
        if dropout_rate > 0:
            y = layers.Dropout(dropout_rate, name="dropout")(y)
        return layers.Dense(classes, activation=classifier_activation, name="predictions", dtype="float32")(y)

    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, classifier=classifier,
        name=name or f"mobilenet_{registry_name}_{input_shape[0]}",
    )
    if timm_file:
        fused = {prefix for row, prefix in zip(arch.blocks, _prefixes(arch.blocks)) if isinstance(row, FusedIB)}
        timm_weights.load_timm_state(model, state, fused)
    else:
        weights_lib.load_weights(model, weights, registry_name, alpha=1.0, include_top=include_top,
                                 input_shape=input_shape)
    return model
