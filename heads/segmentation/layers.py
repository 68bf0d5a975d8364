"""Layers the segmentation heads share: the image-pooling branch's average pooling and
bilinear upsampling by exact factors."""

import math

from mobilenet_tf._keras import layers

POOLINGS = ("paper", "global")


def pool_size(features, pool_crop_size, output_stride, pooling):
    """The "paper" kernel: ``ceil(crop / output_stride)`` (DeepLab's
    ``image_pooling_crop_size``), at most the feature map; None for "global"."""
    if pooling == "global":
        return None
    if features.shape[1] is None or features.shape[2] is None:
        raise ValueError("`pooling='paper'` needs a known input height and width (its kernel is clipped to the "
                         "feature map); pass input_shape=(H, W, 3) or use pooling='global' for any size.")
    if not isinstance(pool_crop_size, (tuple, list)) or len(pool_crop_size) != 2:
        raise ValueError(f"`pool_crop_size` must be (height, width), e.g. (769, 769); got {pool_crop_size!r}.")
    kernel = [math.ceil(c / output_stride) for c in pool_crop_size]
    return (min(kernel[0], features.shape[1]), min(kernel[1], features.shape[2]))


def image_pooling(features, pool_size, pool_strides, name):
    """DeepLab's image-level features: global average pooling (``pool_size`` None,
    keeping (B, 1, 1, C)), or a "valid" ``pool_size`` window sliding by ``pool_strides``."""
    if pool_size is None:
        return layers.GlobalAveragePooling2D(keepdims=True, name=name)(features)
    return layers.AveragePooling2D(pool_size, strides=pool_strides, padding="valid", name=name)(features)


def resize_to(x, reference, name):
    """``x`` resized bilinearly to ``reference``'s (static) height and width; unchanged if equal."""
    if tuple(x.shape[1:3]) == tuple(reference.shape[1:3]):
        return x
    return layers.Resizing(reference.shape[1], reference.shape[2], interpolation="bilinear", name=name)(x)


def upsample(x, factor, size, name, dtype=None):
    """Bilinear x ``factor``, or to exactly ``size`` (static (h, w)) when that is not
    x's size times ``factor`` (backbones with "valid" convolutions: SqueezeNet, Xception)."""
    if size and None not in size and (x.shape[1] * factor, x.shape[2] * factor) != tuple(size):
        return layers.Resizing(size[0], size[1], interpolation="bilinear", name=name, dtype=dtype)(x)
    return layers.UpSampling2D(factor, interpolation="bilinear", name=name, dtype=dtype)(x)
