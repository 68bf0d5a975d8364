"""LR-ASPP semantic segmentation (MobileNetV3 paper section 6.3).

    >>> from mobilenet_tf.heads import lraspp
    >>> model = lraspp.build_lraspp(backbone="v3_large", num_classes=19, input_shape=(1024, 2048, 3))
"""

from mobilenet_tf.heads.lraspp.model import build_lraspp, lraspp_head  # noqa: F401
