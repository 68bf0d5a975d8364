"""Parameters and multiply-adds, per layer and in total.

The papers' convention: multiply-adds of Conv2D, DepthwiseConv2D,
SeparableConv2D and Dense layers and of attention's two matmuls (MobileNetV4's
hybrids) only (no BN, activations, softmax, pooling or bias adds). With it the
profiler reproduces the papers' tables (V1 569M, V2 300M, V3-Large 217M,
V3-Small 56M at 224).
"""

import dataclasses
import math

from mobilenet_tf._keras import keras, layers


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    name: str
    kind: str
    output_shape: tuple
    params: int
    madds: int


@dataclasses.dataclass(frozen=True)
class Profile:
    """Result of ``profile(model)``: totals and one row per layer."""

    name: str
    params: int
    trainable_params: int
    madds: int
    layers: tuple

    @property
    def conv_dense_params(self):
        """Parameters of the counted (Conv/Dense) layers only, no BatchNormalization:
        the papers' and TF-slim's count (e.g. V2 1.0: 3.47M, as slim reports)."""
        return sum(r.params for r in self.layers if r.madds)

    def table(self, only_counted=True):
        """A text table of the layers (those with params or MAdds by default) and totals."""
        rows = [r for r in self.layers if r.params or r.madds or not only_counted]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'type':<22} {'output':<22} {'params':>10} {'MAdds':>13}"]
        for r in rows:
            shape = "x".join("?" if d is None else str(d) for d in r.output_shape)
            lines.append(f"{r.name:<{width}}  {r.kind:<22} {shape:<22} {r.params:>10,} {r.madds:>13,}")
        lines.append(str(self))
        return "\n".join(lines)

    def to_dict(self, per_layer=False):
        out = {"name": self.name, "params": self.params, "trainable_params": self.trainable_params,
               "conv_dense_params": self.conv_dense_params, "madds": self.madds}
        if per_layer:
            out["layers"] = [dataclasses.asdict(r) for r in self.layers]
        return out

    def __str__(self):
        return (f"{self.name}: {self.params:,} params ({self.trainable_params:,} trainable), "
                f"{self.madds / 1e6:,.1f}M multiply-adds")


def _shape(tensor):
    return tuple(tensor.shape[1:])


def layer_madds(layer):
    """Multiply-adds of one layer call, from its input and output shapes (a layer with a
    ``multiply_adds(input_shapes)`` method, such as MobileNetV4's attention, counts its own)."""
    if hasattr(layer, "multiply_adds"):
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        return layer.multiply_adds([tuple(tensor.shape) for tensor in inputs])
    if isinstance(layer, (layers.DepthwiseConv2D, layers.SeparableConv2D)):
        kh, kw = layer.kernel_size
        in_channels = _shape(layer.input)[-1]
        out_h, out_w, out_c = _shape(layer.output)
        depthwise = out_h * out_w * in_channels * layer.depth_multiplier * kh * kw
        if isinstance(layer, layers.SeparableConv2D):
            return depthwise + out_h * out_w * in_channels * layer.depth_multiplier * out_c
        return depthwise
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        in_channels = _shape(layer.input)[-1]
        out_h, out_w, out_c = _shape(layer.output)
        return out_h * out_w * out_c * kh * kw * in_channels // layer.groups
    if isinstance(layer, layers.Dense):
        in_shape = _shape(layer.input)
        return math.prod(in_shape[:-1]) * in_shape[-1] * layer.units
    return 0


def _rows(model, prefix=""):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _rows(layer, prefix + layer.name + "/")
            continue
        if isinstance(layer, layers.InputLayer):
            continue
        output = layer.output
        shape = _shape(output) if hasattr(output, "shape") else ()
        yield LayerProfile(prefix + layer.name, type(layer).__name__, shape,
                           layer.count_params(), layer_madds(layer))


def profile(model, input_shape=None):
    """Count parameters and multiply-adds of a Keras model.

    Args:
        model: a built functional ``keras.Model`` (nested models are counted
            through).
        input_shape: (height, width, channels) to count at, needed when the
            model's input size is unknown (None); the model is cloned at that size.

    Returns:
        ``Profile`` with ``.params``, ``.trainable_params``, ``.madds`` and
        ``.layers`` (one ``LayerProfile`` per layer).

    Example:
        >>> profile(mobilenet_tf.build("v3_small")).madds   # 56.5M at 224
        56516184
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"profile() needs a keras.Model; got {type(model).__name__}.")
    if input_shape is not None:
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(f"`input_shape` must be (height, width, channels); got {input_shape!r}.")
        model = keras.models.clone_model(model, input_tensors=keras.Input(shape=tuple(input_shape)))
    unknown = [s for s in model.inputs if None in tuple(s.shape[1:])]
    if unknown:
        raise ValueError(
            f"model {model.name!r} has an input of unknown size {tuple(unknown[0].shape)}; pass "
            "`input_shape=(height, width, channels)` to count multiply-adds at that size."
        )
    rows = tuple(_rows(model))
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return Profile(model.name, model.count_params(), int(trainable),
                   int(sum(r.madds for r in rows)), rows)
