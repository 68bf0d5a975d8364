"""LR-ASPP, the MobileNetV3 segmentation head (V3 paper section 6.3, Figure 10).

The head reads two backbone endpoints: the last feature map ("C5", stride 16 with
``output_stride=16``; SqueezeNet's last is "C4") and a stride-8 low-level map ("C3"),
their strides checked from the registry's feature information::

    C5 (1/16) -> 1x1 conv (filters) -> BN -> ReLU ---------------------+
    C5 (1/16) -> avg pool (large kernel, large stride) -> 1x1 conv ->  *  -> x2 up -> 1x1 conv (classes) --+
                 sigmoid -> bilinear resize to 1/16 ------------------+                                   +-> x8 up -> logits
    C3 (1/8)  -> 1x1 conv (classes) ---------------------------------------------------------------------+

Design choices, with their source:
- Segmentation backbone: the last stage dilated (``output_stride=16``) and its
  channels halved (``reduced_tail``, the paper's "RF2"), paper 6.3 and Table 7.
- 128 filters in the 1x1 branch: the paper's best row (Table 7); 256 selectable.
- Pooling ``"paper"``: Figure 10's "49x49 avg pool" over the 1/16 map of a
  769x769 training crop. The kernel is the training crop divided by the output
  stride (``ceil(769 / 16) = 49``, DeepLab's ``image_pooling_crop_size``), so in
  training it covers the whole map and at 1024x2048 evaluation it slides; its
  stride defaults to DeepLab's released ``image_pooling_stride=4,5`` (feature
  pixels). ``"global"`` pools the whole map at any size (torchvision's LR-ASPP).
- The 1x1 class conv of the upper branch runs before the x2 upsampling rather
  than after (Figure 10's order): a 1x1 conv commutes with bilinear resizing, so
  the output is identical and the conv costs 4x fewer multiply-adds.
- Low-level branch: the output of the last stride-8 block (torchvision's choice,
  40 channels in V3-Large). DeepLab taps the depthwise output inside the next
  block (120 channels); the difference is 1.5K parameters.
"""

import math
import numbers

import mobilenet_tf
from mobilenet_tf import backbone as backbone_lib, blocks
from mobilenet_tf._keras import keras, layers

POOLINGS = ("paper", "global")
OUTPUT_STRIDES = (16, 32)
FILTERS = (128, 256)
HIGH_LEVEL, LOW_LEVEL = "C5", "C3"
LOW_LEVEL_STRIDE = 8


def build_lraspp(
    backbone="v3_large",
    num_classes=19,
    input_shape=(1024, 2048, 3),
    alpha=None,
    output_stride=16,
    reduced_tail=None,
    filters=128,
    pooling="paper",
    pool_crop_size=(769, 769),
    pool_strides=(4, 5),
    include_preprocessing=True,
    weights=None,
    name=None,
):
    """MobileNetV3 + LR-ASPP segmentation model (V3 paper 6.3, Figure 10).

    Args:
        backbone: a registry name ("v3_large", "v3_small", their minimalistic
            forms, "v2", "v1", ...; its last endpoint, at ``output_stride``, is the
            high-level map: C5, or SqueezeNet's C4) or a ``keras.Model`` whose
            output is a dict with "C3" (stride 8) and "C5" (stride
            ``output_stride``) feature maps.
        num_classes: classes of the logits (19 for Cityscapes).
        input_shape: (height, width, 3); height and width divisible by
            ``output_stride``, or None (then ``pooling="global"``).
        alpha: backbone width multiplier (families that take one; None = 1.0).
        output_stride: 16 (the paper's segmentation backbone) or 32 (no dilation).
        reduced_tail: halve the last stage (the paper's RF2); None = the registry
            record's default (yes for V3, no for V1/V2; families without a reduced
            tail accept only None / False).
        filters: channels of the two C5 branches, 128 or 256 (Table 7).
        pooling: "paper" (large-kernel average pooling, see the module docstring)
            or "global".
        pool_crop_size: training crop size the "paper" kernel is derived from.
        pool_strides: stride of the "paper" pooling, in feature-map pixels.
        include_preprocessing: the model takes [0, 255] pixels.
        weights: backbone weights: None, "imagenet" or a ``.weights.h5`` file.
        name: model name.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> logits (B, H, W, num_classes), float32.

    Example:
        >>> model = build_lraspp("v3_small", num_classes=19, input_shape=(512, 1024, 3))
    """
    _check_int_choice(output_stride, "output_stride", OUTPUT_STRIDES)
    _check_int_choice(filters, "filters", FILTERS)
    backbone_lib.check_positive_int(num_classes, "num_classes")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; got {pooling!r}.")
    if isinstance(backbone, keras.Model):
        features = backbone.output
        inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
        label = backbone.name
        if not isinstance(features, dict) or not {HIGH_LEVEL, LOW_LEVEL} <= set(features):
            found = sorted(features) if isinstance(features, dict) else type(features).__name__
            raise ValueError(f"the LR-ASPP head needs backbone endpoints {HIGH_LEVEL!r} and {LOW_LEVEL!r} (a dict "
                             f"output, e.g. build(..., include_top=False, return_endpoints=True)); got {found}.")
        high, low = features[HIGH_LEVEL], features[LOW_LEVEL]
        # A model of unknown origin has no feature information: its strides are read from the shapes.
        ratio = output_stride // LOW_LEVEL_STRIDE
        if high.shape[1] and low.shape[1] and abs(low.shape[1] - high.shape[1] * ratio) > ratio:
            raise ValueError(f"backbone endpoints {LOW_LEVEL!r} {tuple(low.shape[1:3])} and {HIGH_LEVEL!r} "
                             f"{tuple(high.shape[1:3])} are not at strides 8 and output_stride={output_stride}; "
                             "pass the output_stride the backbone was built with.")
    else:
        input_shape = _check_input_shape(input_shape, output_stride)
        mobilenet_tf.registry.get_entry(backbone)  # unknown name -> ValueError
        inputs = layers.Input(shape=input_shape, name="image")
        model, info = mobilenet_tf.registry.build_features(
            backbone, alpha=alpha, reduced_tail=reduced_tail, output_stride=output_stride, input_tensor=inputs,
            include_preprocessing=include_preprocessing, weights=weights)
        # The high-level map is the backbone's last (C5, or SqueezeNet's C4); strides from its feature info.
        high_name = list(info)[-1]
        strides = ", ".join(f"{key} (stride {feature.stride})" for key, feature in info.items())
        if info[high_name].stride != output_stride or info.get(LOW_LEVEL) is None \
                or info[LOW_LEVEL].stride != LOW_LEVEL_STRIDE:
            raise ValueError(f"the LR-ASPP head needs a stride-{LOW_LEVEL_STRIDE} map ({LOW_LEVEL!r}) and a last "
                             f"map at output_stride={output_stride}; {backbone!r} built with "
                             f"output_stride={output_stride} has {strides}. Use output_stride={info[high_name].stride} for it, or another backbone.")
        high, low = model.output[high_name], model.output[LOW_LEVEL]
        label = backbone
    logits = lraspp_head(high, low, num_classes, output_stride, filters=filters, pooling=pooling,
                         pool_size=_pool_size(high, pool_crop_size, output_stride, pooling),
                         pool_strides=pool_strides,
                         output_size=None if isinstance(inputs, list) else tuple(inputs.shape[1:3]))
    return keras.Model(inputs, logits, name=name or f"lraspp_{label}_{output_stride}")


def lraspp_head(high, low, num_classes, output_stride=16, filters=128, pooling="paper", pool_size=None,
                pool_strides=(4, 5), output_size=None):
    """The head on its two feature maps.

    Args:
        high: (B, H/s, W/s, C) features, s = ``output_stride`` (16 or 32).
        low: (B, H/8, W/8, C') features.
        pool_size: kernel of the "paper" pooling (feature pixels, <= the map size).
        output_size: the input's (H, W) when known. Upsampling is by exact factors
            (x2, x8) where the maps align, as they do for the MobileNets at sizes
            divisible by the output stride; backbones with "valid" convolutions
            (SqueezeNet, Xception) are resized to the exact sizes instead, which
            needs a static input size for them.

    Returns:
        (B, H, W, num_classes) float32 logits.
    """
    x = blocks.conv_bn_act(high, filters, 1, 1, "relu", "lraspp_conv", "lraspp_bn", "lraspp_relu")
    if pooling == "global":
        scale = layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_pool")(high)
    else:
        scale = layers.AveragePooling2D(pool_size, strides=pool_strides, padding="valid", name="lraspp_pool")(high)
    scale = layers.Conv2D(filters, 1, use_bias=False, activation="sigmoid", name="lraspp_scale")(scale)
    if pooling != "global" and tuple(scale.shape[1:3]) != (1, 1):
        scale = layers.Resizing(high.shape[1], high.shape[2], interpolation="bilinear",
                                name="lraspp_scale_resize")(scale)
    x = layers.Multiply(name="lraspp_gate")([x, scale])
    x = layers.Conv2D(num_classes, 1, name="lraspp_high_classifier")(x)
    x = _upsample(x, output_stride // LOW_LEVEL_STRIDE, tuple(low.shape[1:3]), "lraspp_high_upsample")
    y = layers.Conv2D(num_classes, 1, name="lraspp_low_classifier")(low)
    x = layers.Add(name="lraspp_sum")([x, y])
    return _upsample(x, LOW_LEVEL_STRIDE, output_size, "logits", dtype="float32")


def _upsample(x, factor, size, name, dtype=None):
    """Bilinear x ``factor``, or to exactly ``size`` (static (h, w)) when that is not x's size times ``factor``."""
    if size and None not in size and (x.shape[1] * factor, x.shape[2] * factor) != tuple(size):
        return layers.Resizing(size[0], size[1], interpolation="bilinear", name=name, dtype=dtype)(x)
    return layers.UpSampling2D(factor, interpolation="bilinear", name=name, dtype=dtype)(x)


def _check_int_choice(value, name, choices):
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")


def _check_input_shape(input_shape, output_stride):
    """(H, W, 3) with H and W multiples of ``output_stride`` (or None)."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), e.g. (1024, 2048, 3); got {input_shape!r}.")
    for axis, size in zip(("height", "width"), input_shape[:2]):
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 2 * output_stride \
                or size % output_stride:
            suggestion = max(2, round(size / output_stride)) * output_stride if isinstance(size, numbers.Real) else 512
            raise ValueError(
                f"`input_shape` {tuple(input_shape)}: {axis} {size!r} must be a multiple of output_stride "
                f"{output_stride} (>= {2 * output_stride}) so that the 1/8 and 1/{output_stride} maps align; "
                f"pad or crop the images to e.g. {suggestion} (the recipe crops 768, not DeepLab's 769)."
            )
    return tuple(input_shape)


def _pool_size(high, pool_crop_size, output_stride, pooling):
    """The "paper" kernel: ceil(crop / output_stride), at most the feature map."""
    if pooling == "global":
        return None
    if high.shape[1] is None or high.shape[2] is None:
        raise ValueError("`pooling='paper'` needs a known input height and width (its kernel is clipped to the "
                         "feature map); pass input_shape=(H, W, 3) or use pooling='global' for any size.")
    if not isinstance(pool_crop_size, (tuple, list)) or len(pool_crop_size) != 2:
        raise ValueError(f"`pool_crop_size` must be (height, width), e.g. (769, 769); got {pool_crop_size!r}.")
    kernel = [math.ceil(c / output_stride) for c in pool_crop_size]
    return (min(kernel[0], high.shape[1]), min(kernel[1], high.shape[2]))
