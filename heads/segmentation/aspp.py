"""R-ASPP and DeepLabv3's ASPP, the DeepLab segmentation heads (V2 paper section 6.3
and Table 7; V3 paper Table 7's R-ASPP rows).

DeepLab's reference code (research/deeplab/model.py, ``extract_features`` and
``get_branch_logits``) is the authority; on one feature map (B, h, w, C)::

    image pooling: avg pool -> 1x1 conv (filters) -> BN -> ReLU -> bilinear resize to h x w --+
    aspp0:         1x1 conv (filters) -> BN -> ReLU ------------------------------------------+-> concat
    aspp1..3:      3x3 conv, rate r -> BN -> ReLU, r in atrous_rates (ASPP only) -----------+
    concat -> 1x1 conv (filters, "concat_projection") -> BN -> ReLU -> dropout 0.1
           -> 1x1 conv (classes, with bias) -> bilinear x output_stride -> logits

- **R-ASPP** (the V2 paper's "reduced" ASPP, its Table 7 rows without ASPP and the V3
  paper's R-ASPP rows): image pooling + the 1x1 branch, no atrous branches.
- **ASPP** (DeepLabv3): plus three 3x3 atrous branches, rates 6 / 12 / 18 at output
  stride 16 and doubled at 8 (DeepLab's g3doc; 3 / 6 / 9 at 32 keeps their reach in
  input pixels). Regular 3x3 convolutions: the V2 paper's parameter counts need them
  (V2* 2.11M + 3 x 3*3*320*256 + (1280 - 512) * 256 = 4.52M, its Table 7); DeepLab's
  ``aspp_with_separable_conv`` (DeepLabv3+) would add 0.3M.
- 256 filters (``aspp_convs_filters``); dropout keep_prob 0.9 after the projection.
- Image pooling as DeepLab's: a kernel of the training crop over the output stride
  (``image_pooling_crop_size``: global on the training crop, sliding by
  ``image_pooling_stride`` on larger evaluation images), or global at any size.
"""

from mobilenet_tf import blocks
from mobilenet_tf._keras import layers
from mobilenet_tf.heads.segmentation import layers as seg_layers

ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}  # by output stride
DROPOUT_RATE = 0.1  # DeepLab: keep_prob 0.9 after the concat projection


def aspp_head(features, num_classes, output_stride=16, filters=256, atrous_rates=(), pool_size=None,
              pool_strides=(1, 1), output_size=None, dropout_rate=DROPOUT_RATE):
    """R-ASPP (``atrous_rates=()``) or ASPP on one feature map.

    Args:
        features: (B, h, w, C), h = H / ``output_stride``; h and w static.
        atrous_rates: rates of the 3x3 branches (``ATROUS_RATES[output_stride]``
            for DeepLabv3's ASPP).
        pool_size: the image-pooling kernel (feature pixels); None pools globally.
        pool_strides: its stride when it slides (DeepLab's ``image_pooling_stride``).
        output_size: the input's (H, W).

    Returns:
        (B, H, W, num_classes) float32 logits.
    """
    pooled = seg_layers.image_pooling(features, pool_size, pool_strides, "aspp_pool")
    pooled = blocks.conv_bn_act(pooled, filters, 1, 1, "relu", "aspp_pool_conv", "aspp_pool_bn", "aspp_pool_relu")
    branches = [seg_layers.resize_to(pooled, features, "aspp_pool_resize"),
                blocks.conv_bn_act(features, filters, 1, 1, "relu", "aspp0_conv", "aspp0_bn", "aspp0_relu")]
    for index, rate in enumerate(atrous_rates, 1):
        branches.append(blocks.conv_bn_act(features, filters, 3, 1, "relu", f"aspp{index}_conv", f"aspp{index}_bn",
                                           f"aspp{index}_relu", dilation_rate=rate))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = blocks.conv_bn_act(x, filters, 1, 1, "relu", "aspp_projection_conv", "aspp_projection_bn",
                           "aspp_projection_relu")
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="aspp_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="aspp_classifier")(x)
    return seg_layers.upsample(x, output_stride, output_size, "logits", dtype="float32")
