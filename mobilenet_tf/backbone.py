"""What every backbone builder shares: argument checks, the input, the walk over
strides (endpoints, output stride), the classifier or pooling on top, and weights.

A family module (``mobilenet_v1``, ``mobilenet_v2``, ``mobilenet_v3``) keeps only
its paper table and the loop that turns rows into blocks; everything else goes
through here, so every family validates, names endpoints and loads weights alike.
"""

import math
import numbers

from mobilenet_tf import blocks
from mobilenet_tf._keras import keras, layers

MIN_INPUT_SIZE = 32
POOLINGS = (None, "avg", "max")
OUTPUT_STRIDES = (8, 16, 32)
ENDPOINT_NAMES = ("C1", "C2", "C3", "C4", "C4_expand", "C5_block", "C5")


def check_alpha(alpha, name="alpha"):
    """Width multiplier: a number > 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(
            f"`{name}` must be a number > 0 (the width multiplier, e.g. 0.75 or 1.0); "
            f"got {alpha!r}."
        )
    return float(alpha)


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_options(
    *, input_shape, input_tensor, include_top, pooling, classes, dropout_rate,
    output_stride, return_endpoints,
):
    """Validate the keras.applications-style options shared by all builders.

    Returns:
        The input shape as a 3-tuple ``(height, width, channels)``; height and
        width may be None. Taken from ``input_tensor`` when one is given.
    """
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(
                "`input_tensor` must be a Keras tensor such as `keras.Input(shape=(224, 224, 3))`; "
                f"got {type(input_tensor).__name__}."
            )
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                f"`input_shape` {tuple(input_shape)} disagrees with `input_tensor`'s shape "
                f"{tensor_shape}; pass only one of them."
            )
        input_shape = tensor_shape
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be a 3-tuple (height, width, channels) in channels-last "
            f"order, e.g. (224, 224, 3); got {input_shape!r}."
        )
    height, width, channels = input_shape
    for axis, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < MIN_INPUT_SIZE:
            raise ValueError(
                f"`input_shape` {tuple(input_shape)} is too small or not an integer in {axis}: "
                f"height and width must be integers >= {MIN_INPUT_SIZE} (or None for any size)."
            )
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(
            f"`input_shape` {tuple(input_shape)} has invalid channels {channels!r}: the last "
            "entry must be the number of channels, an integer >= 1 (3 for RGB)."
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; got {pooling!r}.")
    check_positive_int(classes, "classes")
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, numbers.Real) or not 0 <= dropout_rate < 1:
        raise ValueError(f"`dropout_rate` must be a number in [0, 1); got {dropout_rate!r}.")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"`output_stride` must be one of {OUTPUT_STRIDES} (32 = no dilation); "
            f"got {output_stride!r}."
        )
    if return_endpoints and include_top:
        raise ValueError(
            "`return_endpoints=True` returns feature maps and needs `include_top=False`."
        )
    if return_endpoints and pooling is not None:
        raise ValueError(
            "`pooling` applies to the final feature map only; with `return_endpoints=True` "
            "leave `pooling=None`."
        )
    return (height, width, int(channels))


def model_inputs(input_shape, input_tensor, include_preprocessing):
    """The model input and the tensor the stem consumes.

    With ``include_preprocessing`` the model takes pixels in [0, 255] and rescales
    them to [-1, 1] itself (keras.applications' V3 contract); without it the
    model expects [-1, 1] (keras.applications' V1/V2 ``preprocess_input``).
    """
    inputs = input_tensor if input_tensor is not None else layers.Input(shape=input_shape)
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(x)
    return inputs, x


class StrideWalk:
    """Follows the output stride down a table and records the named endpoints.

    Call ``block(x, stride)`` before each strided layer with the tensor going
    into it: when the stride is > 1, ``x`` is the last tensor at the current
    stride and is recorded as ``C{log2(stride)}``. Once the stride reaches
    ``output_stride``, further strides become dilation, DeepLab's rule (the
    block that would have strided keeps rate 1, the ones after it use the
    accumulated rate).
    """

    def __init__(self, output_stride=32):
        self.output_stride = output_stride
        self.nominal_stride = 1  # stride the table specifies, ignoring dilation
        self.stride = 1  # stride actually applied
        self.rate = 1
        self.endpoints = {}

    def block(self, x, stride):
        """Returns ``(stride, dilation)`` to use for a layer the table gives ``stride``."""
        if stride == 1:
            return 1, self.rate
        self.record(x)
        self.nominal_stride *= stride
        if self.stride >= self.output_stride:
            dilation = self.rate
            self.rate *= stride
            return 1, dilation
        self.stride *= stride
        return stride, self.rate

    def record(self, x, suffix=""):
        """Record ``x`` as the endpoint of the current nominal stride."""
        if self.nominal_stride > 1:
            self.endpoints[f"C{int(math.log2(self.nominal_stride))}{suffix}"] = x


def inverted_residual_widths(rows, in_channels, in_filters, alpha):
    """Per row of a V2/V3 table: ``(row, expanded, filters, residual)``, the widths
    ``inverted_residual_stack`` builds (and the feature information reports).

    Widths follow keras.applications exactly: output ``make_divisible(filters *
    alpha)``; expansion ``make_divisible(input channels * expanded / in_filters)``,
    i.e. the row's expansion ratio applied to the actual (scaled) input; a residual
    where the row keeps the stride and the channels.

    Args:
        rows: tuple of ``BlockSpec``.
        in_channels: actual channels of the stem output.
        in_filters: channels of the stem output at width 1.0 (the table's input).
        alpha: width multiplier.
    """
    for row in rows:
        expanded = in_channels
        if row.expanded != in_filters:
            expanded = blocks.make_divisible(in_channels * (row.expanded / in_filters))
        filters = blocks.make_divisible(row.filters * alpha)
        yield row, expanded, filters, row.stride == 1 and in_channels == filters
        in_channels, in_filters = filters, row.filters


def inverted_residual_layers(rows, in_channels, in_filters, alpha, naming):
    """``registry.walk_features`` rows of a V2/V3 stack: ``(stride, channels, output
    layer, (expanded, expansion layer))`` per block."""
    for block_id, (row, expanded, filters, residual) in enumerate(
            inverted_residual_widths(rows, in_channels, in_filters, alpha)):
        prefix = naming.prefix(block_id)
        output = prefix + ("add" if residual else "project" + naming.bn)
        expansion = prefix + "expand" + naming.act if expanded != in_channels else None
        yield row.stride, filters, output, (expanded, expansion)
        in_channels = filters


def inverted_residual_stack(x, rows, in_filters, alpha, walk, naming):
    """Walk a V2/V3 table: one ``blocks.inverted_residual`` per row, widths from
    ``inverted_residual_widths``. Records "C4_expand", the expansion feeding the
    block that goes from stride 16 to 32.

    Args:
        x: (B, H, W, C) stem output.
        rows: tuple of ``BlockSpec``.
        in_filters: channels of ``x`` at width 1.0 (the table's input).
        alpha: width multiplier.
        walk: the model's ``StrideWalk``.
        naming: the family's ``BlockNaming``.

    Returns:
        (B, H / s, W / s, make_divisible(rows[-1].filters * alpha)).
    """
    for block_id, (row, expanded, filters, residual) in enumerate(
            inverted_residual_widths(rows, x.shape[-1], in_filters, alpha)):
        enters_stride_32 = row.stride > 1 and walk.nominal_stride == 16
        stride, dilation = walk.block(x, row.stride)
        x, expansion = blocks.inverted_residual(
            x, expanded, filters, row, stride, dilation, block_id, naming, residual=residual,
        )
        if enters_stride_32:
            walk.endpoints["C4_expand"] = expansion
    return x


def dense_classifier(classes, classifier_activation, dropout_rate, pool_name="global_average_pooling"):
    """The usual top: global average pooling -> dropout (if > 0) -> Dense "predictions"
    (float32, so mixed-precision predictions stay float32). Returns ``features -> predictions``."""

    def classifier(features):
        y = layers.GlobalAveragePooling2D(name=pool_name)(features)
        if dropout_rate > 0:
            y = layers.Dropout(dropout_rate, name="dropout")(y)
        return layers.Dense(classes, activation=classifier_activation, name="predictions", dtype="float32")(y)

    return classifier


def assemble(inputs, features, endpoints, *, include_top, pooling, return_endpoints, classifier, name):
    """The finished ``keras.Model``: classifier, pooled features, feature map or endpoints.

    Args:
        inputs: the model input.
        features: the last feature map (B, H/32, W/32, C).
        endpoints: dict of named feature maps (see ``ENDPOINT_NAMES``).
        classifier: a function ``features -> predictions``, used when
            ``include_top``.
    """
    if include_top:
        # The classifier's last layer computes in float32 (dtype="float32"), so
        # under a mixed-precision policy the predictions stay float32, as the
        # Keras mixed-precision guide advises.
        outputs = classifier(features)
    elif return_endpoints:
        outputs = {key: endpoints[key] for key in ENDPOINT_NAMES if key in endpoints}
    elif pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    elif pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="max_pool")(features)
    else:
        outputs = features
    source_inputs = keras.utils.get_source_inputs(inputs)
    if len(source_inputs) == 1:
        source_inputs = source_inputs[0]
    return keras.Model(source_inputs, outputs, name=name)


def model_name(family, alpha, input_shape):
    return f"mobilenet_{family}_{alpha:.2f}_{input_shape[0]}"
