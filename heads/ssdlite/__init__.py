"""SSDLite detection (MobileNetV2 paper 6.2, MobileNetV3 paper 6.2): in progress.

Landed: ``model`` (build_ssdlite), ``anchors``, ``box_coder``, ``matcher``
(target assignment), ``losses`` (focal + smooth L1, hard negative mining),
``postprocess`` (decode + NMS, build_inference_model) and ``coco_eval``
(pycocotools), with the TF Object Detection API's semantics for
``ssdlite_mobilenet_v3_large_320x320_coco``; synthetic detection scenes are
``mobilenet_tf.data.shapes.synthetic_detection``. The COCO input pipeline, the
recipe and TFLite export with postprocessing are issue 5's remaining work.
"""
