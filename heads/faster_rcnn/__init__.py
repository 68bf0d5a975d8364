"""Faster R-CNN detection on MobileNet (MobileNetV1 paper 4.6, Table 13).

    >>> from mobilenet_tf.heads import faster_rcnn
    >>> model = faster_rcnn.build_faster_rcnn(backbone="v1", num_classes=91)
    >>> detections = faster_rcnn.detect(model(images))  # boxes, scores, classes, num_detections

Modules: ``model`` (first stage, proposals, ROI crops, second stage, ``detect``,
``profile``), ``anchors`` (the grid anchor generator), ``losses`` (targets, sampling,
losses) and ``data`` (keep-aspect-ratio resizing, padded batches), with the TF Object
Detection API's semantics for ``faster_rcnn_meta_arch``, its MobileNet V1 feature
extractor and the ``faster_rcnn_*`` configs. Trained by ``recipes/faster_rcnn_coco.py``.
"""

from mobilenet_tf.heads.faster_rcnn import anchors, data, losses, model  # noqa: F401
from mobilenet_tf.heads.faster_rcnn.model import build_faster_rcnn, detect  # noqa: F401
