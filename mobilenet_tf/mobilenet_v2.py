"""MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381).

The body is the paper's Table 2 as data; layer names are
keras.applications.MobileNetV2's, so its ImageNet weights load by name.
"""

from mobilenet_tf import backbone, blocks, registry, weights as weights_lib
from mobilenet_tf.blocks import BlockNaming, BlockSpec

STEM_FILTERS = 32  # Table 2: conv2d 3x3, 32, s2
LAST_CONV = 1280  # Table 2: conv2d 1x1, 1280

# V2 paper Table 2, bottleneck rows as printed: expansion t, channels c, repeats n, stride s.
V2_TABLE = (
    # t, c,  n, s
    (1, 16, 1, 1),  # C1: stride 2
    (6, 24, 2, 2),  # C2: stride 4
    (6, 32, 3, 2),  # C3: stride 8
    (6, 64, 4, 2),
    (6, 96, 3, 1),  # C4: stride 16
    (6, 160, 3, 2),
    (6, 320, 1, 1),  # then the 1x1 conv to 1280 = C5: stride 32
)

NAMING = BlockNaming(first="expanded_conv_", other="block_{}_", bn="_BN", act="_relu")


def table_rows(table=V2_TABLE, in_channels=STEM_FILTERS):
    """Expand the (t, c, n, s) table into one ``BlockSpec`` per block."""
    rows = []
    for t, c, n, s in table:
        for i in range(n):
            rows.append(BlockSpec(kernel=3, expanded=t * in_channels, filters=c, se=False,
                                  activation="relu6", stride=s if i == 0 else 1))
            in_channels = c
    return tuple(rows)


V2_BLOCKS = table_rows()


def feature_info(alpha=1.0, reduced_tail=False):
    """``registry.FeatureInfo`` of ``mobilenet_v2(alpha=..., reduced_tail=...)``'s endpoints:
    C1..C4 the stages' last blocks, "C4_expand" block 13's expansion, "C5_block" the last
    block (320 channels), C5 "out_relu"."""
    rows = blocks.reduce_tail(V2_BLOCKS) if reduced_tail else V2_BLOCKS
    last_conv = LAST_CONV // 2 if reduced_tail else LAST_CONV
    stem = blocks.make_divisible(STEM_FILTERS * alpha)
    layers = [(2, stem, "Conv1_relu"), *backbone.inverted_residual_layers(rows, stem, STEM_FILTERS, alpha, NAMING),
              (1, blocks.make_divisible(last_conv * max(alpha, 1.0)), "out_relu")]
    return registry.walk_features(layers, last_block=True)


def mobilenet_v2(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    dropout_rate=0.0,
    include_preprocessing=False,
    return_endpoints=False,
    output_stride=32,
    reduced_tail=False,
    name=None,
):
    """MobileNetV2 as a functional ``keras.Model`` (V2 paper, Table 2).

    Args:
        input_shape: (height, width, channels), height/width >= 32 or None.
        alpha: width multiplier (keras.applications publishes 0.35, 0.5, 0.75,
            1.0, 1.3, 1.4). The last conv keeps 1280 channels unless alpha > 1.
        include_top, weights, input_tensor, pooling, classes,
        classifier_activation, include_preprocessing, return_endpoints,
        output_stride, reduced_tail, name: as in ``mobilenet_v1``.
        dropout_rate: dropout before the classifier (0: none, as keras.applications).

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes) with the top, else
        (B, H/32, W/32, 1280), pooled (B, C), or a dict of endpoints where
        "C4_expand" is the 576-channel expansion of block 13 (the paper's
        "expansion of layer 15", the first SSDLite feature map).

    Example:
        >>> model = mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3), classes=10)
    """
    alpha = backbone.check_alpha(alpha)
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    weights_lib.check_weights_argument(
        weights, "v2", alpha=alpha, include_top=include_top, classes=classes,
        channels=input_shape[2], reduced_tail=reduced_tail,
    )
    rows = blocks.reduce_tail(V2_BLOCKS) if reduced_tail else V2_BLOCKS
    last_conv = LAST_CONV // 2 if reduced_tail else LAST_CONV

    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    stride, _ = walk.block(x, 2)
    x = blocks.conv_bn_act(
        x, blocks.make_divisible(STEM_FILTERS * alpha), 3, stride, "relu6", "Conv1", "bn_Conv1", "Conv1_relu"
    )
    x = backbone.inverted_residual_stack(x, rows, STEM_FILTERS, alpha, walk, NAMING)
    walk.record(x, "_block")  # 320 channels: DeepLab's segmentation features (V2 paper Table 7's "V2*")
    x = blocks.conv_bn_act(
        x, blocks.make_divisible(last_conv * max(alpha, 1.0)), 1, 1, "relu6", "Conv_1", "Conv_1_bn", "out_relu"
    )
    walk.record(x)


    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints,
        classifier=backbone.dense_classifier(classes, classifier_activation, dropout_rate),
        name=name or backbone.model_name("v2", alpha, input_shape),
    )
    weights_lib.load_weights(model, weights, "v2", alpha=alpha, include_top=include_top, input_shape=input_shape)
    return model
