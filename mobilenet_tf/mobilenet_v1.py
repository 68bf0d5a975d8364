"""MobileNetV1 (Howard et al. 2017, arXiv:1704.04861).

The body is the paper's Table 1 as data; layer names are
keras.applications.MobileNet's, so its ImageNet weights load by name.
"""

from mobilenet_tf import backbone, blocks, registry, weights as weights_lib
from mobilenet_tf._keras import layers
from mobilenet_tf.blocks import BlockSpec

STEM_FILTERS = 32  # Table 1: Conv / s2, 3x3x3x32


def _dw(in_channels, filters, stride):
    """Table 1 row pair "Conv dw / s, 3x3xC dw" + "Conv / s1, 1x1xCxF"."""
    return BlockSpec(kernel=3, expanded=in_channels, filters=filters, se=False, activation="relu6", stride=stride)


# V1 paper Table 1 (after the stem), one row per depthwise-separable block.
V1_BLOCKS = (
    _dw(32, 64, 1),  # C1: stride 2
    _dw(64, 128, 2),
    _dw(128, 128, 1),  # C2: stride 4
    _dw(128, 256, 2),
    _dw(256, 256, 1),  # C3: stride 8
    _dw(256, 512, 2),
    _dw(512, 512, 1),
    _dw(512, 512, 1),
    _dw(512, 512, 1),
    _dw(512, 512, 1),
    _dw(512, 512, 1),  # C4: stride 16
    _dw(512, 1024, 2),
    _dw(1024, 1024, 1),  # C5: stride 32
)


def feature_info(alpha=1.0, reduced_tail=False):
    """``registry.FeatureInfo`` of ``mobilenet_v1(alpha=..., reduced_tail=...)``'s endpoints
    C1..C5: each stage's last pointwise ReLU (C5: "conv_pw_13_relu")."""
    rows = blocks.reduce_tail(V1_BLOCKS) if reduced_tail else V1_BLOCKS
    layers = [(2, blocks.make_divisible(STEM_FILTERS * alpha), "conv1_relu")]
    layers += [(row.stride, blocks.make_divisible(row.filters * alpha), f"conv_pw_{block_id}_relu")
               for block_id, row in enumerate(rows, start=1)]
    return registry.walk_features(layers)


def mobilenet_v1(
    input_shape=None,
    alpha=1.0,
    depth_multiplier=1,
    dropout_rate=1e-3,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=False,
    return_endpoints=False,
    output_stride=32,
    reduced_tail=False,
    name=None,
):
    """MobileNetV1 as a functional ``keras.Model`` (V1 paper, Table 1).

    Args:
        input_shape: (height, width, channels); the resolution multiplier.
            Height/width >= 32 or None. Default (224, 224, 3) with the top,
            (None, None, 3) without.
        alpha: width multiplier (Table 6: 1.0, 0.75, 0.5, 0.25).
        depth_multiplier: channels per input channel of each depthwise conv.
        dropout_rate: dropout before the classifier (keras.applications: 1e-3).
        include_top: add the average pool + 1x1 conv classifier.
        weights: None, ``"imagenet"`` (keras.applications' weights, downloaded)
            or a path to a ``.weights.h5`` file.
        input_tensor: optional Keras tensor to use as the input.
        pooling: without the top: None (feature map), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: activation of the top ("softmax", None, ...).
        include_preprocessing: take [0, 255] pixels and rescale inside the model;
            False (keras.applications' contract) expects [-1, 1].
        return_endpoints: with ``include_top=False``, output a dict of feature
            maps C1..C5 (strides 2..32).
        output_stride: 32, or 16 / 8 to replace the last strides by dilation.
        reduced_tail: halve the channels of the last stage.
        name: model name.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes) with the top, else
        (B, H/32, W/32, 1024 * alpha), pooled (B, C), or a dict of endpoints.

    Example:
        >>> model = mobilenet_v1(alpha=0.5, input_shape=(160, 160, 3))
    """
    alpha = backbone.check_alpha(alpha)
    depth_multiplier = backbone.check_positive_int(depth_multiplier, "depth_multiplier")
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    weights_lib.check_weights_argument(
        weights, "v1", alpha=alpha, include_top=include_top, classes=classes,
        channels=input_shape[2], reduced_tail=reduced_tail, depth_multiplier=depth_multiplier,
    )
    rows = blocks.reduce_tail(V1_BLOCKS) if reduced_tail else V1_BLOCKS

    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = blocks.conv_bn_act(
        x, blocks.make_divisible(STEM_FILTERS * alpha), 3, stride, "relu6", "conv1", "conv1_bn", "conv1_relu"
    )
    for block_id, row in enumerate(rows, start=1):
        stride, dilation = walk.block(x, row.stride)
        x = blocks.depthwise_separable(
            x, blocks.make_divisible(row.filters * alpha), row.kernel, stride, dilation,
            block_id, depth_multiplier,
        )
    walk.record(x)

    def classifier(features):
        y = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling")(features)
        y = layers.Dropout(dropout_rate, name="dropout")(y)
        y = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(y)
        y = blocks.squeeze_pooled(y, name="reshape_2")
        return layers.Activation(classifier_activation, name="predictions", dtype="float32")(y)

    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, classifier=classifier,
        name=name or backbone.model_name("v1", alpha, input_shape),
    )
    weights_lib.load_weights(model, weights, "v1", alpha=alpha, include_top=include_top, input_shape=input_shape,
                             depth_multiplier=depth_multiplier)
    return model
