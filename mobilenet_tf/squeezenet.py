"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016, arXiv:1602.07360).

Fire modules (squeeze 1x1 -> expand 1x1 + expand 3x3, concatenated) as data;
no fully connected layer: dropout -> 1x1 conv to the classes -> ReLU -> global
average pooling (paper section 3.3). 1.0 is the paper's Table 1; 1.1 is the
SqueezeNet repository's v1.1 (3x3 stem with 64 filters, pooling moved earlier:
2.4x less computation, same accuracy), as torchvision builds both.
"""

import dataclasses

from mobilenet_tf import backbone, registry, weights as weights_lib
from mobilenet_tf._keras import keras, layers


@dataclasses.dataclass(frozen=True)
class Fire:
    """One fire module: squeeze 1x1 filters, expand 1x1 and expand 3x3 filters."""

    squeeze: int
    expand1x1: int
    expand3x3: int


POOL = "maxpool"  # a 3x3 / stride-2 max pooling between fire modules

# Paper Table 1 (after conv1 96 7x7/2 and maxpool 3x3/2); torchvision squeezenet1_0.
SQUEEZENET_1_0 = dict(stem=(96, 7), body=(
    Fire(16, 64, 64), Fire(16, 64, 64), Fire(32, 128, 128), POOL,
    Fire(32, 128, 128), Fire(48, 192, 192), Fire(48, 192, 192), Fire(64, 256, 256), POOL,
    Fire(64, 256, 256),
))
# SqueezeNet v1.1 (forresti/SqueezeNet, torchvision squeezenet1_1): conv1 64 3x3/2.
SQUEEZENET_1_1 = dict(stem=(64, 3), body=(
    Fire(16, 64, 64), Fire(16, 64, 64), POOL,
    Fire(32, 128, 128), Fire(32, 128, 128), POOL,
    Fire(48, 192, 192), Fire(48, 192, 192), Fire(64, 256, 256), Fire(64, 256, 256),
))
VERSIONS = {"1_0": SQUEEZENET_1_0, "1_1": SQUEEZENET_1_1}


# SqueezeNet has no BatchNormalization: with Keras' default Glorot init the signal fades
# through 18 ReLU convs and training stalls at chance (measured). torchvision's init:
# He (Kaiming) uniform for the convs, normal(0, 0.01) for the classifier conv.
CONV_INIT = "he_uniform"


def fire(x, spec, dilation, name):
    """Fire module (paper Figure 2): (B, H, W, C) -> (B, H, W, expand1x1 + expand3x3)."""
    conv = dict(activation="relu", kernel_initializer=CONV_INIT)
    s = layers.Conv2D(spec.squeeze, 1, name=name + "_squeeze", **conv)(x)
    e1 = layers.Conv2D(spec.expand1x1, 1, name=name + "_expand1x1", **conv)(s)
    e3 = layers.Conv2D(spec.expand3x3, 3, padding="same", dilation_rate=dilation, name=name + "_expand3x3",
                       **conv)(s)
    return layers.Concatenate(name=name + "_concat")([e1, e3])


def max_pool(x, stride, name):
    """3x3 max pooling with Caffe's / torchvision's ceil rounding, ceil((n - 3) / 2) + 1,
    at any size: one zero row and column at the end, then "valid" pooling (the input
    follows a ReLU, so the zeros never win the max). Stride 1 (dilated): "same"."""
    if stride == 1:
        return layers.MaxPooling2D(3, 1, padding="same", name=name)(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=name + "_pad")(x)
    return layers.MaxPooling2D(3, stride, padding="valid", name=name)(x)


def feature_info(version="1_1"):
    """``registry.FeatureInfo`` of ``squeezenet(version)``'s endpoints: C1 "conv1", then
    the map before each pooling, and C4, the last fire module at stride 16 (SqueezeNet
    has no stride-32 stage, so no C5)."""
    table = VERSIONS[version]
    filters = table["stem"][0]
    layers = [(2, filters, "conv1"), (2, filters, "pool1")]
    pools, fires = 1, 1
    for spec in table["body"]:
        if spec == POOL:
            pools += 1
            layers.append((2, filters, f"pool{pools}"))
        else:
            fires += 1
            filters = spec.expand1x1 + spec.expand3x3
            layers.append((1, filters, f"fire{fires}_concat"))
    return registry.walk_features(layers)


def squeezenet(
    version="1_1",
    input_shape=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    dropout_rate=0.5,
    classifier_activation="softmax",
    include_preprocessing=True,
    return_endpoints=False,
    output_stride=32,
    name=None,
):
    """SqueezeNet as a functional ``keras.Model``.

    Args:
        version: "1_0" (paper Table 1) or "1_1".
        input_shape, include_top, input_tensor, pooling, classes,
        classifier_activation, include_preprocessing, return_endpoints, name:
            as in ``mobilenet_v1``.
        weights: None or a ``.weights.h5`` file (keras.applications has no
            SqueezeNet).
        dropout_rate: dropout before the classifier conv (paper: 0.5 after fire9).
        output_stride: SqueezeNet's last map is at stride 16, so 32 and 16 give
            the same network; 8 dilates the last fire modules.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> (B, classes) with the top, else the
        (B, H/16, W/16, 512) feature map, pooled (B, 512), or endpoints C1..C4,
        named by their stride (C4, stride 16, is the last map: SqueezeNet has no
        stride-32 stage and so no C5).

    Example:
        >>> model = squeezenet("1_1", input_shape=(224, 224, 3), classes=10)
    """
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {sorted(VERSIONS)}; got {version!r}.")
    input_shape = backbone.check_options(
        input_shape=input_shape, input_tensor=input_tensor, include_top=include_top,
        pooling=pooling, classes=classes, dropout_rate=dropout_rate,
        output_stride=output_stride, return_endpoints=return_endpoints,
    )
    variant = f"squeezenet{version}"
    weights_lib.check_weights_argument(weights, variant, alpha=1.0, include_top=include_top, classes=classes,
                                       channels=input_shape[2])
    table = VERSIONS[version]
    inputs, x = backbone.model_inputs(input_shape, input_tensor, include_preprocessing)
    walk = backbone.StrideWalk(output_stride)
    filters, kernel = table["stem"]
    stride, _ = walk.block(x, 2)
    x = layers.Conv2D(filters, kernel, strides=stride, activation="relu", kernel_initializer=CONV_INIT,
                      name="conv1")(x)
    stride, _ = walk.block(x, 2)
    x = max_pool(x, stride, "pool1")
    dilation, pools, fires = 1, 1, 1
    for spec in table["body"]:
        if spec == POOL:
            pools += 1
            stride, dilation = walk.block(x, 2)
            x = max_pool(x, stride, f"pool{pools}")
            dilation = walk.rate
            continue
        fires += 1
        x = fire(x, spec, dilation, f"fire{fires}")
    walk.record(x)  # C4: SqueezeNet's last map is at stride 16

    def classifier(features):
        y = layers.Dropout(dropout_rate, name="dropout")(features)
        y = layers.Conv2D(classes, 1, activation="relu", name="conv10",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(y)
        y = layers.GlobalAveragePooling2D(name="global_average_pooling")(y)
        return layers.Activation(classifier_activation, name="predictions", dtype="float32")(y)

    model = backbone.assemble(
        inputs, x, walk.endpoints, include_top=include_top, pooling=pooling,
        return_endpoints=return_endpoints, classifier=classifier,
        name=name or f"{variant}_{input_shape[0]}",
    )
    weights_lib.load_weights(model, weights, variant, alpha=1.0, include_top=include_top, input_shape=input_shape)
    return model
