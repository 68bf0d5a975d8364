"""ShuffleNet V1 (Zhang et al. 2017, arXiv:1707.01083) and V2 (Ma et al. 2018,
arXiv:1807.11164).

Channel tables are data. V1: the paper's Table 1 at width 1x for groups 1, 2, 3,
4 and 8, plus the 0.5x / 1.5x / 2.0x tables the authors released for groups 3
and 8 (megvii-model/ShuffleNet-Series); other (groups, width) pairs do not
divide evenly into groups and are refused. V2: the paper's Table 5
(torchvision's shufflenet_v2_x0_5 ... x2_0).
"""

import dataclasses

from mobilenet_tf import backbone, blocks, registry, weights as weights_lib
from mobilenet_tf._keras import layers
from mobilenet_tf.channel_ops import ChannelShuffle, ChannelSplit

STAGE_REPEATS = (4, 8, 4)  # units in stages 2, 3 and 4 (both papers)


@dataclasses.dataclass(frozen=True)
class Channels:
    """Output channels of conv1, stages 2-4 and (V2) conv5."""

    stem: int
    stages: tuple
    last: int = 0


# (groups, width) -> channels. V1 paper Table 1 (width 1x) and the released 0.5x/1.5x/2x tables.
V1_CHANNELS = {
    (1, 1.0): Channels(24, (144, 288, 576)),
    (2, 1.0): Channels(24, (200, 400, 800)),
    (3, 1.0): Channels(24, (240, 480, 960)),
    (4, 1.0): Channels(24, (272, 544, 1088)),
    (8, 1.0): Channels(24, (384, 768, 1536)),
    (3, 0.5): Channels(12, (120, 240, 480)),
    (3, 1.5): Channels(24, (360, 720, 1440)),
    (3, 2.0): Channels(48, (480, 960, 1920)),
    (8, 0.5): Channels(16, (192, 384, 768)),
    (8, 1.5): Channels(24, (576, 1152, 2304)),
    (8, 2.0): Channels(48, (768, 1536, 3072)),
}
# width -> channels. V2 paper Table 5.
V2_CHANNELS = {
    0.5: Channels(24, (48, 96, 192), 1024),
    1.0: Channels(24, (116, 232, 464), 1024),
    1.5: Channels(24, (176, 352, 704), 1024),
    2.0: Channels(24, (244, 488, 976), 2048),
}


def _pointwise(x, filters, groups, name, relu=True):
    """1x1 (group) conv -> BN (-> ReLU)."""
    return blocks.conv_bn_act(x, filters, 1, 1, "relu" if relu else None, name, name + "_bn", name + "_relu",
                              groups=groups)


def _depthwise(x, stride, dilation, name):
    """3x3 depthwise conv -> BN (no activation, both papers)."""
    return blocks.depthwise_bn_act(x, 3, stride, dilation, None, name, name + "_bn", None)


def shufflenet_v1_unit(x, out_channels, groups, stride, dilation, name):
    """ShuffleNet unit (V1 paper Figure 2b/c).

    stride 1: relu(x + GConv(DW(shuffle(GConv(x))))); stride 2: concat(avgpool(x),
    relu(main)) with main producing ``out_channels - C`` channels. The bottleneck
    is a quarter of ``out_channels``; the first unit's first 1x1 is not grouped
    (its input has only 24 channels, paper section 3.3).
    """
    in_channels = x.shape[-1]
    first_group = name == "stage2_unit1"
    downsample = stride > 1 or name.endswith("unit1")
    main_out = out_channels - in_channels if downsample else out_channels
    y = _pointwise(x, out_channels // 4, 1 if first_group else groups, name + "_gconv1")
    if groups > 1:
        y = ChannelShuffle(groups, name=name + "_shuffle")(y)
    y = _depthwise(y, stride, dilation, name + "_dwconv")
    y = _pointwise(y, main_out, groups, name + "_gconv2", relu=False)
    if downsample:
        shortcut = layers.AveragePooling2D(3, strides=stride, padding="same", name=name + "_avgpool")(x)
        y = layers.ReLU(name=name + "_relu")(y)
        return layers.Concatenate(name=name + "_concat")([shortcut, y])
    y = layers.Add(name=name + "_add")([x, y])
    return layers.ReLU(name=name + "_relu")(y)


def shufflenet_v2_unit(x, out_channels, stride, dilation, name):
    """ShuffleNet V2 unit (V2 paper Figure 3c/d).

    stride 1: split the channels in half, transform one half (1x1-BN-ReLU, 3x3 dw-BN,
    1x1-BN-ReLU), concatenate, shuffle (2 groups). Stride 2 / first unit of a
    stage: both branches see the whole input (the left one: 3x3 dw-BN, 1x1-BN-ReLU),
    doubling the channels.
    """
    half = out_channels // 2
    if stride > 1 or name.endswith("unit1"):
        left = _depthwise(x, stride, dilation, name + "_branch1_dwconv")
        left = _pointwise(left, half, 1, name + "_branch1_conv")
        right = x
    else:
        left, right = ChannelSplit(name=name + "_split")(x)
    right = _pointwise(right, half, 1, name + "_branch2_conv1")
    right = _depthwise(right, stride, dilation, name + "_branch2_dwconv")
    right = _pointwise(right, half, 1, name + "_branch2_conv2")
    x = layers.Concatenate(name=name + "_concat")([left, right])
    return ChannelShuffle(2, name=name + "_shuffle")(x)


def _build(family, channels, unit, *, input_shape, include_top, weights, input_tensor, pooling, classes,
           dropout_rate, classifier_activation, include_preprocessing, return_endpoints, output_stride, name):
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    weights_lib.check_weights_argument(weights, family, alpha=1.0, include_top=include_top, classes=classes,
                                       channels=input_shape[2])
    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = blocks.conv_bn_act(x, channels.stem, 3, stride, "relu", "conv1", "conv1_bn", "conv1_relu")
    stride, _ = walk.block(x, 2)
    x = layers.MaxPooling2D(3, strides=stride, padding="same", name="maxpool")(x)
    for stage, (filters, repeats) in enumerate(zip(channels.stages, STAGE_REPEATS), start=2):
        for index in range(1, repeats + 1):
            stride, dilation = walk.block(x, 2) if index == 1 else (1, walk.rate)
            x = unit(x, filters, stride, dilation, f"stage{stage}_unit{index}")
    if channels.last:
        x = _pointwise(x, channels.last, 1, "conv5")
    walk.record(x)


    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, classifier=backbone.dense_classifier(classes, classifier_activation,
                                                                                dropout_rate),
        name=name or f"{family}_{input_shape[0]}",
    )
    weights_lib.load_weights(model, weights, family, alpha=1.0, include_top=include_top, input_shape=input_shape)
    return model


def _check_width(width, valid, what):
    if isinstance(width, bool) or width not in valid:
        raise ValueError(f"`width` must be one of {sorted(valid)} for {what}; got {width!r}.")
    return float(width)


def _feature_info(channels, unit_output):
    """Endpoints C1 ("conv1_relu"), C2 ("maxpool"), C3..C4 the stages' last units, C5
    stage 4 (V1) or conv5 (V2). ``unit_output(name, first)`` is a unit's last layer."""
    layers = [(2, channels.stem, "conv1_relu"), (2, channels.stem, "maxpool")]
    for stage, (filters, repeats) in enumerate(zip(channels.stages, STAGE_REPEATS), start=2):
        for index in range(1, repeats + 1):
            layers.append((2 if index == 1 else 1, filters, unit_output(f"stage{stage}_unit{index}", index == 1)))
    if channels.last:
        layers.append((1, channels.last, "conv5_relu"))
    return registry.walk_features(layers)


def feature_info_v1(groups=3, width=1.0):
    """``registry.FeatureInfo`` of ``shufflenet_v1(groups, width)``'s endpoints."""
    return _feature_info(V1_CHANNELS[(groups, width)], lambda name, first: name + ("_concat" if first else "_relu"))


def feature_info_v2(width=1.0):
    """``registry.FeatureInfo`` of ``shufflenet_v2(width)``'s endpoints."""
    return _feature_info(V2_CHANNELS[width], lambda name, first: name + "_shuffle")


def shufflenet_v1(
    groups=3, width=1.0, input_shape=None, include_top=True, weights=None, input_tensor=None, pooling=None,
    classes=1000, dropout_rate=0.0, classifier_activation="softmax", include_preprocessing=True,
    return_endpoints=False, output_stride=32, name=None,
):
    """ShuffleNet V1 as a functional ``keras.Model`` (V1 paper, Table 1).

    Args:
        groups: groups of the 1x1 convolutions: 1, 2, 3, 4 or 8.
        width: channel scale ("ShuffleNet s x"): 1.0 for every ``groups``; 0.5,
            1.5 and 2.0 for groups 3 and 8 (the released tables).
        Other arguments as in ``mobilenet_v1``; ``weights`` None or a file
        (keras.applications has no ShuffleNet).

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes), else the stride-32 map or
        endpoints C1..C5 (C5 = stage 4).

    Example:
        >>> model = shufflenet_v1(groups=8, width=0.5, input_shape=(224, 224, 3))
    """
    if isinstance(groups, bool) or groups not in {g for g, _ in V1_CHANNELS}:
        raise ValueError(f"`groups` must be one of {sorted({g for g, _ in V1_CHANNELS})}; got {groups!r}.")
    if (groups, width) not in V1_CHANNELS:
        pairs = ", ".join(f"(groups={g}, width={w:g})" for g, w in sorted(V1_CHANNELS))
        raise ValueError(f"ShuffleNet V1 has no channel table for groups={groups}, width={width!r}; the "
                         f"valid pairs are {pairs}.")
    def unit(x, filters, stride, dilation, unit_name):
        return shufflenet_v1_unit(x, filters, groups, stride, dilation, unit_name)

    label = f"shufflenet_v1_g{groups}_{_width_tag(width)}"
    return _build(f"shufflenet_v1_g{groups}", V1_CHANNELS[(groups, width)], unit, input_shape=input_shape,
                  include_top=include_top, weights=weights, input_tensor=input_tensor, pooling=pooling,
                  classes=classes, dropout_rate=dropout_rate, classifier_activation=classifier_activation,
                  include_preprocessing=include_preprocessing, return_endpoints=return_endpoints,
                  output_stride=output_stride, name=name or label)


def shufflenet_v2(
    width=1.0, input_shape=None, include_top=True, weights=None, input_tensor=None, pooling=None,
    classes=1000, dropout_rate=0.0, classifier_activation="softmax", include_preprocessing=True,
    return_endpoints=False, output_stride=32, name=None,
):
    """ShuffleNet V2 as a functional ``keras.Model`` (V2 paper, Table 5).

    Args:
        width: 0.5, 1.0, 1.5 or 2.0 ("ShuffleNet v2 0.5x" ...).
        Other arguments as in ``shufflenet_v1``.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes), else the stride-32 conv5
        map (1024 or 2048 channels) or endpoints C1..C5 (C5 = conv5).

    Example:
        >>> model = shufflenet_v2(width=0.5, input_shape=(224, 224, 3), classes=10)
    """
    width = _check_width(width, V2_CHANNELS, "ShuffleNet V2")
    label = f"shufflenet_v2_{_width_tag(width)}"
    return _build(label, V2_CHANNELS[width], shufflenet_v2_unit, input_shape=input_shape,
                  include_top=include_top, weights=weights, input_tensor=input_tensor, pooling=pooling,
                  classes=classes, dropout_rate=dropout_rate, classifier_activation=classifier_activation,
                  include_preprocessing=include_preprocessing, return_endpoints=return_endpoints,
                  output_stride=output_stride, name=name)


def _width_tag(width):
    return "x" + f"{float(width):.1f}".replace(".", "_")
