"""SSD detection: SSDLite on MobileNet V2/V3 (MobileNetV2 paper 6.2, MobileNetV3 paper
6.2) and SSD 300 on MobileNet V1 (MobileNetV1 paper 4.6, Table 13).

    >>> from mobilenet_tf.heads import ssdlite
    >>> model = ssdlite.build_ssdlite(backbone="v3_large", num_classes=91, input_size=320)
    >>> ssd300 = ssdlite.build_ssd(backbone="v1", num_classes=91, input_size=300)  # regular convolutions
    >>> detector = ssdlite.build_inference_model(model)  # images -> boxes, scores, classes, num_detections

Modules: ``model`` (backbone + extra layers + predictors), ``anchors``,
``box_coder``, ``matcher`` (target assignment), ``losses`` (focal + smooth L1, hard
negative mining), ``postprocess`` (decode + NMS, SavedModel and TFLite detectors),
``data`` (TFDS COCO and synthetic shapes, SSD augmentation, targets in
``tf.data``), ``coco_eval`` (pycocotools) and ``visualize``, with the TF Object
Detection API's semantics for ``ssdlite_mobilenet_v3_large_320x320_coco`` and
``ssd_mobilenet_v1_coco``.
"""

from mobilenet_tf.heads.ssdlite import model  # noqa: F401
from mobilenet_tf.heads.ssdlite.model import anchors_for, build_ssd, build_ssdlite  # noqa: F401
from mobilenet_tf.heads.ssdlite.postprocess import build_inference_model  # noqa: F401
