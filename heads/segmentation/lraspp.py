"""LR-ASPP, the MobileNetV3 segmentation head (V3 paper section 6.3, Figure 10).

The head reads two backbone endpoints (``model.build_segmentation`` picks and checks
them): the high-level map (the last, "C5", stride 16 with ``output_stride=16``;
SqueezeNet's last is "C4") and a stride-8 low-level map ("C3")::

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

from mobilenet_tf import blocks
from mobilenet_tf.heads.segmentation import layers as seg_layers
from mobilenet_tf._keras import layers

LOW_LEVEL, LOW_LEVEL_STRIDE = "C3", 8


def lraspp_head(high, low, num_classes, output_stride=16, filters=128, pool_size=None, pool_strides=(4, 5),
                output_size=None):
    """The head on its two feature maps.

    Args:
        high: (B, H/s, W/s, C) features, s = ``output_stride`` (16 or 32).
        low: (B, H/8, W/8, C') features.
        pool_size: kernel of the "paper" pooling (feature pixels, <= the map size);
            None pools globally.
        output_size: the input's (H, W) when known. Upsampling is by exact factors
            (x2, x8) where the maps align, as they do for the MobileNets at sizes
            divisible by the output stride; backbones with "valid" convolutions
            (SqueezeNet, Xception) are resized to the exact sizes instead, which
            needs a static input size for them.

    Returns:
        (B, H, W, num_classes) float32 logits.
    """
    x = blocks.conv_bn_act(high, filters, 1, 1, "relu", "lraspp_conv", "lraspp_bn", "lraspp_relu")
    scale = seg_layers.image_pooling(high, pool_size, pool_strides, "lraspp_pool")
    scale = layers.Conv2D(filters, 1, use_bias=False, activation="sigmoid", name="lraspp_scale")(scale)
    if tuple(scale.shape[1:3]) != (1, 1):
        scale = seg_layers.resize_to(scale, high, "lraspp_scale_resize")
    x = layers.Multiply(name="lraspp_gate")([x, scale])
    x = layers.Conv2D(num_classes, 1, name="lraspp_high_classifier")(x)
    x = seg_layers.upsample(x, output_stride // LOW_LEVEL_STRIDE, tuple(low.shape[1:3]), "lraspp_high_upsample")
    y = layers.Conv2D(num_classes, 1, name="lraspp_low_classifier")(low)
    x = layers.Add(name="lraspp_sum")([x, y])
    return seg_layers.upsample(x, LOW_LEVEL_STRIDE, output_size, "logits", dtype="float32")
