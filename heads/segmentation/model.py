"""One builder for the segmentation models: a backbone's feature map(s) under an
LR-ASPP, R-ASPP or ASPP head, logits at the input size.

The heads and the papers' rows they reproduce (README "Segmentation sizes"):

- ``"lraspp"`` (``lraspp.lraspp_head``): the V3 paper's head, on the last map and a
  stride-8 map; 128 filters by default (V3 Table 7, rows 3-4 and 7-11).
- ``"raspp"`` (``aspp.aspp_head`` without atrous branches): the V2 paper's reduced
  ASPP, 256 filters (V2 Table 7 without ASPP; V3 Table 7 rows 1-2 and 5-6).
- ``"aspp"``: DeepLabv3's ASPP, 256 filters, rates 6 / 12 / 18 at output stride 16,
  doubled at 8 (V2 Table 7 with ASPP).

``feature`` chooses the map the head sits on: the backbone's last (default: C5, or
SqueezeNet's C4) or "C5_block", the last block before V2 / V3's final 1x1 conv: the V2
paper's "V2*" (320 channels, DeepLab's MobileNetV2 features), which is also what V3
Table 7's V2 rows count.

    >>> model = build_segmentation("v2", "raspp", num_classes=21, input_shape=(512, 512, 3),
    ...                            reduced_tail=False, feature="C5_block")
"""

import numbers

import mobilenet_tf
from mobilenet_tf import backbone as backbone_lib
from mobilenet_tf._keras import keras, layers
from mobilenet_tf.heads.segmentation import aspp, layers as seg_layers, lraspp

HEADS = ("lraspp", "raspp", "aspp")
OUTPUT_STRIDES = {"lraspp": (16, 32), "raspp": (8, 16, 32), "aspp": (8, 16, 32)}
FILTERS = (128, 256)
DEFAULT_FILTERS = {"lraspp": 128, "raspp": 256, "aspp": 256}
POOLINGS = seg_layers.POOLINGS


def build_segmentation(
    backbone="v3_large",
    head="lraspp",
    num_classes=19,
    input_shape=(1024, 2048, 3),
    alpha=None,
    output_stride=16,
    reduced_tail=None,
    filters=None,
    feature=None,
    pooling="paper",
    pool_crop_size=(769, 769),
    pool_strides=(4, 5),
    atrous_rates=None,
    include_preprocessing=True,
    weights=None,
    name=None,
):
    """A segmentation model: backbone + ``head`` (see the module docstring).

    Args:
        backbone: a registry name ("v3_large", "v3_small", "v2", "v1", ...) or a
            ``keras.Model`` whose output is a dict of feature maps (``build(...,
            include_top=False, return_endpoints=True)``) at ``output_stride``.
        head: "lraspp", "raspp" or "aspp".
        num_classes: classes of the logits (19 for Cityscapes, 21 for VOC).
        input_shape: (height, width, 3), multiples of ``output_stride``; None
            sizes only for "lraspp" with ``pooling="global"``.
        alpha: backbone width multiplier (families that take one; None = 1.0).
        output_stride: 16 or 32 for "lraspp"; 8, 16 or 32 for "raspp" / "aspp"
            (the backbone's last stages dilated to keep it).
        reduced_tail: halve the last stage (the V3 paper's RF2); None = the registry
            record's default (yes for V3, no for V1 / V2).
        filters: head channels, 128 or 256; None = 128 for LR-ASPP, 256 otherwise.
        feature: the endpoint the head sits on; None = the backbone's last.
        pooling: "paper" (a kernel of ``pool_crop_size / output_stride``, sliding
            by ``pool_strides`` on larger inputs) or "global".
        pool_crop_size: the training crop the "paper" kernel is derived from.
        pool_strides: stride of the "paper" pooling, in feature-map pixels.
        atrous_rates: ASPP's rates; None = ``aspp.ATROUS_RATES[output_stride]``.
        include_preprocessing: the model takes [0, 255] pixels.
        weights: backbone weights: None, "imagenet" or a ``.weights.h5`` file.
        name: model name.

    Returns:
        ``keras.Model``: (B, H, W, 3) -> logits (B, H, W, num_classes), float32.
    """
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}; got {head!r}.")
    _check_int_choice(output_stride, "output_stride", OUTPUT_STRIDES[head], f" for head={head!r}")
    filters = DEFAULT_FILTERS[head] if filters is None else filters
    _check_int_choice(filters, "filters", FILTERS)
    backbone_lib.check_positive_int(num_classes, "num_classes")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; got {pooling!r}.")
    if atrous_rates is not None and head != "aspp":
        raise ValueError(f"`atrous_rates` applies to head='aspp' only; got head={head!r}.")
    needs_low = head == "lraspp"
    if isinstance(backbone, keras.Model):
        inputs, high, low, label = _given_backbone(backbone, feature, needs_low, output_stride)
    else:
        input_shape = _check_input_shape(input_shape, output_stride)
        mobilenet_tf.registry.get_entry(backbone)  # unknown name -> ValueError
        inputs = layers.Input(shape=input_shape, name="image")
        model, info = mobilenet_tf.registry.build_features(
            backbone, alpha=alpha, reduced_tail=reduced_tail, output_stride=output_stride, input_tensor=inputs,
            include_preprocessing=include_preprocessing, weights=weights)
        high_name = _check_endpoints(backbone, info, feature, needs_low, output_stride)
        high = model.output[high_name]
        low = model.output[lraspp.LOW_LEVEL] if needs_low else None
        label = backbone
    output_size = None if isinstance(inputs, list) else tuple(inputs.shape[1:3])
    pool_size = seg_layers.pool_size(high, pool_crop_size, output_stride, pooling)
    if head == "lraspp":
        logits = lraspp.lraspp_head(high, low, num_classes, output_stride, filters=filters, pool_size=pool_size,
                                    pool_strides=pool_strides, output_size=output_size)
    else:
        if None in high.shape[1:3]:
            raise ValueError(f"head={head!r} needs a known input height and width (its image-pooling branch is "
                             "resized to the feature map); pass input_shape=(H, W, 3).")
        rates = () if head == "raspp" else aspp.ATROUS_RATES[output_stride] if atrous_rates is None \
            else tuple(atrous_rates)
        logits = aspp.aspp_head(high, num_classes, output_stride, filters=filters, atrous_rates=rates,
                                pool_size=pool_size, pool_strides=pool_strides, output_size=output_size)
    return keras.Model(inputs, logits, name=name or f"{head}_{label}_{output_stride}")


def build_lraspp(backbone="v3_large", num_classes=19, input_shape=(1024, 2048, 3), **options):
    """MobileNetV3 + LR-ASPP (V3 paper 6.3, Figure 10): ``build_segmentation(head="lraspp")``.

    Example:
        >>> model = build_lraspp("v3_small", num_classes=19, input_shape=(512, 1024, 3))
    """
    return build_segmentation(backbone, "lraspp", num_classes, input_shape, **options)


def _given_backbone(backbone, feature, needs_low, output_stride):
    """(inputs, high, low, label) of a ``keras.Model`` with dict output; strides read from the shapes."""
    features = backbone.output
    high_name = feature or backbone_lib.ENDPOINT_NAMES[-1]
    wanted = {high_name, lraspp.LOW_LEVEL} if needs_low else {high_name}
    if not isinstance(features, dict) or not wanted <= set(features):
        found = sorted(features) if isinstance(features, dict) else type(features).__name__
        raise ValueError(f"the head needs backbone endpoints {sorted(wanted)} (a dict output, e.g. build(..., "
                         f"include_top=False, return_endpoints=True)); got {found}.")
    high, low = features[high_name], features[lraspp.LOW_LEVEL] if needs_low else None
    ratio = output_stride // lraspp.LOW_LEVEL_STRIDE
    if needs_low and high.shape[1] and low.shape[1] and abs(low.shape[1] - high.shape[1] * ratio) > ratio:
        raise ValueError(f"backbone endpoints {lraspp.LOW_LEVEL!r} {tuple(low.shape[1:3])} and {high_name!r} "
                         f"{tuple(high.shape[1:3])} are not at strides 8 and output_stride={output_stride}; "
                         "pass the output_stride the backbone was built with.")
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    return inputs, high, low, backbone.name


def _check_endpoints(backbone, info, feature, needs_low, output_stride):
    """The name of the map the head sits on, its stride (and C3's) checked from the feature info."""
    high_name = feature or list(info)[-1]  # the last: C5, or SqueezeNet's C4
    if high_name not in info:
        raise ValueError(f"`feature` {feature!r} is not an endpoint of {backbone!r}; it has {list(info)} "
                         "(C5_block: V2 / V3 only).")
    strides = ", ".join(f"{key} (stride {entry.stride})" for key, entry in info.items())
    low = info.get(lraspp.LOW_LEVEL)
    if info[high_name].stride != output_stride or (
            needs_low and (low is None or low.stride != lraspp.LOW_LEVEL_STRIDE)):
        need = f"a stride-{lraspp.LOW_LEVEL_STRIDE} map ({lraspp.LOW_LEVEL!r}) and " if needs_low else ""
        raise ValueError(f"the head needs {need}{high_name!r} at output_stride={output_stride}; {backbone!r} built "
                         f"with output_stride={output_stride} has {strides}. Use output_stride="
                         f"{info[high_name].stride} for it, or another backbone.")
    return high_name


def _check_int_choice(value, name, choices, context=""):
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}{context}; got {value!r}.")


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
                f"{output_stride} (>= {2 * output_stride}) so that the feature maps align; "
                f"pad or crop the images to e.g. {suggestion} (the recipe crops 768, not DeepLab's 769)."
            )
    return tuple(input_shape)
