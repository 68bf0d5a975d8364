"""Semantic segmentation: LR-ASPP (V3 paper 6.3), R-ASPP and DeepLabv3's ASPP (V2 paper
6.3) behind one builder, with Cityscapes / PASCAL VOC / folder / synthetic data, mIoU
evaluation and multi-scale + flip inference.

    >>> from mobilenet_tf.heads import segmentation
    >>> model = segmentation.build_lraspp(backbone="v3_large", num_classes=19, input_shape=(1024, 2048, 3))
    >>> model = segmentation.build_segmentation("v2", "aspp", num_classes=21, input_shape=(512, 512, 3),
    ...                                         feature="C5_block")
"""

from mobilenet_tf.heads.segmentation.aspp import aspp_head  # noqa: F401
from mobilenet_tf.heads.segmentation.lraspp import lraspp_head  # noqa: F401
from mobilenet_tf.heads.segmentation.model import HEADS, build_lraspp, build_segmentation  # noqa: F401
from mobilenet_tf.heads.segmentation.multiscale import MultiScaleFlip  # noqa: F401
