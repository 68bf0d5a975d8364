"""Xception (Chollet 2017, arXiv:1610.02357).

Entry, middle and exit flows (paper Figure 5) as data. Layer names and padding
are keras.applications.Xception's, so its ImageNet weights transfer (its four
unnamed residual 1x1 convs and their BN are ours "blockN_residual_conv/_bn",
matched in order by ``weights.load_keras_applications_weights``).
"""

import dataclasses

from mobilenet_tf import backbone, blocks, registry, weights as weights_lib
from mobilenet_tf._keras import layers

MIN_INPUT_SIZE = 71  # keras.applications.Xception's minimum (two "valid" stem convs)


@dataclasses.dataclass(frozen=True)
class XceptionBlock:
    """A residual block of separable convs.

    Attributes:
        filters: output channels of each SeparableConv2D.
        relu_first: a ReLU precedes the first separable conv (all but block 2).
        stride: 2 = ends with 3x3/2 max pooling and has a 1x1/2 conv shortcut;
            1 = identity shortcut.
    """

    filters: tuple
    relu_first: bool = True
    stride: int = 2


# Paper Figure 5. Entry flow: blocks 2-4; middle flow: blocks 5-12; exit flow: block 13.
XCEPTION_BLOCKS = (
    XceptionBlock((128, 128), relu_first=False),
    XceptionBlock((256, 256)),
    XceptionBlock((728, 728)),
    *[XceptionBlock((728, 728, 728), stride=1)] * 8,
    XceptionBlock((728, 1024)),
)
EXIT_CONVS = (1536, 2048)  # block 14: separable convs with ReLU after each


def _separable(x, filters, dilation, name, relu_after=False):
    x = layers.SeparableConv2D(filters, 3, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)
    x = blocks.batch_norm(x, name + "_bn")
    return layers.Activation("relu", name=name + "_act")(x) if relu_after else x


def xception_block(x, spec, index, walk):
    """One residual block: [ReLU] SepConv-BN (ReLU SepConv-BN)* [+ max pool], plus the shortcut."""
    prefix = f"block{index}"
    if spec.stride > 1:
        stride, dilation = walk.block(x, spec.stride)
        shortcut = layers.Conv2D(spec.filters[-1], 1, strides=stride, padding="same", use_bias=False,
                                 name=prefix + "_residual_conv")(x)
        shortcut = blocks.batch_norm(shortcut, prefix + "_residual_bn")
    else:
        stride, dilation, shortcut = 1, walk.rate, x
    for i, filters in enumerate(spec.filters, start=1):
        if i > 1 or spec.relu_first:
            x = layers.Activation("relu", name=f"{prefix}_sepconv{i}_act")(x)
        x = _separable(x, filters, dilation, f"{prefix}_sepconv{i}")
    if spec.stride > 1:
        x = layers.MaxPooling2D(3, strides=stride, padding="same", name=prefix + "_pool")(x)
    return layers.Add(name=prefix + "_add")([x, shortcut])


def feature_info():
    """``registry.FeatureInfo`` of ``xception()``'s endpoints: C1 "block1_conv2_act", then
    the blocks' "blockN_add" before each stride, C5 "block14_sepconv2_act"."""
    layers = [(2, 32, "block1_conv1_act"), (1, 64, "block1_conv2_act")]
    layers += [(spec.stride, spec.filters[-1], f"block{index}_add")
               for index, spec in enumerate(XCEPTION_BLOCKS, start=2)]
    layers += [(1, filters, f"block14_sepconv{i}_act") for i, filters in enumerate(EXIT_CONVS, start=1)]
    return registry.walk_features(layers)


def xception(
    input_shape=None, include_top=True, weights=None, input_tensor=None, pooling=None, classes=1000,
    dropout_rate=0.0, classifier_activation="softmax", include_preprocessing=False, return_endpoints=False,
    output_stride=32, name=None,
):
    """Xception as a functional ``keras.Model`` (paper Figure 5; keras.applications' layers).

    Args:
        input_shape: (height, width, channels), height/width >= 71 or None;
            default (299, 299, 3) with the top.
        weights: None, "imagenet" (keras.applications' weights) or a file.
        include_preprocessing: False (keras.applications' contract: inputs in
            [-1, 1], ``keras.applications.xception.preprocess_input``) or True
            to take [0, 255] pixels.
        dropout_rate: dropout before the classifier (keras.applications: none).
        Other arguments as in ``mobilenet_v1``.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes), else the (B, H/32, W/32,
        2048) map, pooled (B, 2048), or endpoints C1..C5.

    Example:
        >>> model = xception(input_shape=(299, 299, 3))
    """
    if include_top and input_shape is None and input_tensor is None:
        input_shape = (299, 299, 3)
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    for size in input_shape[:2]:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(f"`input_shape` {input_shape}: Xception needs height and width >= {MIN_INPUT_SIZE}.")
    weights_lib.check_weights_argument(weights, "xception", alpha=1.0, include_top=include_top, classes=classes,
                                       channels=input_shape[2])
    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = layers.Conv2D(32, 3, strides=stride, use_bias=False, name="block1_conv1")(x)
    x = layers.Activation("relu", name="block1_conv1_act")(blocks.batch_norm(x, "block1_conv1_bn"))
    x = layers.Conv2D(64, 3, use_bias=False, name="block1_conv2")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(blocks.batch_norm(x, "block1_conv2_bn"))
    for index, spec in enumerate(XCEPTION_BLOCKS, start=2):
        x = xception_block(x, spec, index, walk)
    for i, filters in enumerate(EXIT_CONVS, start=1):
        x = _separable(x, filters, walk.rate, f"block14_sepconv{i}", relu_after=True)
    walk.record(x)


    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, name=name or f"xception_{input_shape[0]}",
        classifier=backbone.dense_classifier(classes, classifier_activation, dropout_rate, pool_name="avg_pool"),
    )
    weights_lib.load_weights(model, weights, "xception", alpha=1.0, include_top=include_top, input_shape=input_shape)
    return model
