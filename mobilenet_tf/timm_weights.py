"""timm's MobileNetV4 checkpoints into our Keras models: a name map and layout changes.

timm (``mobilenetv4_*`` in ``timm/models/mobilenetv3.py``) publishes the only trained
MobileNetV4 weights. A ``.safetensors`` file from the Hugging Face Hub (e.g.
``timm/mobilenetv4_conv_small.e2400_r224_in1k``, ``model.safetensors``) is read with
the ``safetensors`` package (numpy, no PyTorch). Our layer ``stage{s}_{b}_*`` is timm's
``blocks.{s}.{b}.*`` (``mobilenet_v4``); kernels go from PyTorch's (out, in, kh, kw) to
Keras' (kh, kw, in, out), depthwise (C, 1, kh, kw) to (kh, kw, C, 1), Linear (out, in)
to (in, out); BatchNorm's weight / bias / running mean / running var become gamma /
beta / moving mean / moving variance.

Matching timm's outputs also needs timm's conventions, which ``mobilenet_v4`` applies
when ``weights`` is a ``.safetensors`` file: symmetric padding, BN epsilon 1e-5 and
ImageNet mean / std input normalisation (``TIMM_MEAN`` / ``TIMM_STD`` on [0, 1] pixels).
"""

import os

import numpy as np

# timm's ImageNet-1k checkpoints at each variant's native resolution (Hugging Face Hub ids;
# the file to pass as ``weights`` is the repository's model.safetensors).
CHECKPOINTS = {
    "v4_conv_small": "timm/mobilenetv4_conv_small.e2400_r224_in1k",
    "v4_conv_medium": "timm/mobilenetv4_conv_medium.e500_r256_in1k",
    "v4_conv_large": "timm/mobilenetv4_conv_large.e600_r384_in1k",
    "v4_hybrid_medium": "timm/mobilenetv4_hybrid_medium.ix_e550_r256_in1k",
    "v4_hybrid_large": "timm/mobilenetv4_hybrid_large.e600_r384_in1k",
}
TIMM_MEAN, TIMM_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM_BN_EPSILON = 1e-5
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # -> gamma, beta, moving mean, moving variance

# Our layer-name suffix -> timm's module path inside a block, per block kind.
_BLOCK_MODULES = {
    "conv": "conv", "conv_bn": "bn1",  # ConvBN rows
    "expand": ("conv_exp", "pw_exp.conv"), "expand_bn": ("bn1", "pw_exp.bn"),  # (FusedIB, UIB)
    "project": ("conv_pwl", "pw_proj.conv"), "project_bn": ("bn2", "pw_proj.bn"),
    "start_dw": "dw_start.conv", "start_dw_bn": "dw_start.bn", "middle_dw": "dw_mid.conv", "middle_dw_bn": "dw_mid.bn",
    "layer_scale": "layer_scale",
    "norm": "norm", "query": "attn.query.proj", "key_down": "attn.key.down_conv", "key_down_bn": "attn.key.norm",
    "key": "attn.key.proj", "value_down": "attn.value.down_conv", "value_down_bn": "attn.value.norm",
    "value": "attn.value.proj", "output": "attn.output.proj",
}
_TOP_MODULES = {"stem": "conv_stem", "stem_bn": "bn1", "conv_1": "blocks.4.0.conv", "conv_1_bn": "blocks.4.0.bn1",
                "conv_2": "conv_head", "conv_2_bn": "norm_head", "predictions": "classifier"}


def read_safetensors(path):
    """{name: numpy array} of a ``.safetensors`` file; ``ValueError`` for a missing or unreadable one."""
    if not os.path.isfile(path):
        raise ValueError(f"`weights` file {path!r} does not exist.")
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"`weights` file {path!r} is not a readable .safetensors checkpoint ({error}).") from None


def timm_module(layer_name, fused_stages=()):
    """timm's module path for one of our layer names (None: a layer without weights).

    ``fused_stages``: the ``stage{s}_{b}_`` prefixes that are FusedIB rows, whose
    expansion and projection timm names ``conv_exp`` / ``conv_pwl``."""
    if layer_name in _TOP_MODULES:
        return _TOP_MODULES[layer_name]
    if not layer_name.startswith("stage"):
        return None
    stage, index, suffix = layer_name[len("stage"):].split("_", 2)
    module = _BLOCK_MODULES.get(suffix)
    if module is None:
        return None
    if isinstance(module, tuple):
        module = module[0] if f"stage{stage}_{index}_" in fused_stages else module[1]
    return f"blocks.{stage}.{index}.{module}"


def _keras_arrays(layer, module, state):
    """``(timm name, array)`` per weight of ``layer`` (``set_weights`` order), read from
    ``state`` at ``module`` and put in Keras' layout."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        names = [f"{module}.{field}" for field in BN_FIELDS]
        return [(name, state[name]) for name in names]
    if kind == "LayerScale":
        return [(f"{module}.gamma", state[f"{module}.gamma"])]
    weight = f"{module}.weight"
    if kind == "Dense":
        return [(weight, state[weight].T), (f"{module}.bias", state[f"{module}.bias"])]
    axes = (2, 3, 0, 1) if kind == "DepthwiseConv2D" else (2, 3, 1, 0)  # else Conv2D
    return [(weight, state[weight].transpose(axes))]


def load_timm_state(model, state, fused_stages=()):
    """Fill ``model`` (a ``mobilenet_v4`` model) from timm's state dict ``state``.

    Every weight of the model must come from ``state`` with its shape; timm's head
    (``conv_head``, ``norm_head``, ``classifier``) is ignored for a model without the
    top. Raises ``ValueError`` naming the first tensor that is missing or has another
    shape, or the first timm tensor the model has no place for."""
    used = set()
    for layer in model.layers:
        module = timm_module(layer.name, fused_stages) if layer.weights else None
        if module is None:
            continue
        try:
            arrays = _keras_arrays(layer, module, state)
        except KeyError as missing:
            raise ValueError(f"the checkpoint has no tensor {missing.args[0]!r} for layer {layer.name!r}: is it "
                             "timm's checkpoint of this MobileNetV4 variant?") from None
        for (key, array), weight in zip(arrays, layer.get_weights()):
            if array.shape != weight.shape:
                raise ValueError(f"tensor {key!r} for layer {layer.name!r} has shape {array.shape} in Keras' "
                                 f"layout; the model needs {weight.shape} (another variant, or classes?).")
        layer.set_weights([np.asarray(array, np.float32) for _, array in arrays])
        used.update(key for key in state if key.startswith(module + "."))
    has_top = any(layer.name == "predictions" for layer in model.layers)
    head = ("conv_head.", "norm_head.", "classifier.")
    unused = [key for key in state if key not in used and not key.endswith("num_batches_tracked")
              and (has_top or not key.startswith(head))]
    if unused:
        raise ValueError(f"the checkpoint's tensor {unused[0]!r} (and {len(unused) - 1} more) has no layer in "
                         f"{model.name!r}: another MobileNetV4 variant?")
