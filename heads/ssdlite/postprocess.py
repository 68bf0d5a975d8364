"""Decoding and non-maximum suppression: raw SSDLite outputs -> detections.

``build_inference_model(model)`` wraps a trained model into one that takes an
image batch and returns ``boxes`` (B, K, 4) normalised [ymin, xmin, ymax, xmax],
``scores`` (B, K), ``classes`` (B, K) class ids (1..num_classes-1) and
``num_detections`` (B,), with ``tf.image.combined_non_max_suppression`` (IoU 0.6,
100 detections per image) inside the graph.
"""

import tensorflow as tf

from mobilenet_tf._keras import keras
from mobilenet_tf.heads.ssdlite import box_coder, model as model_lib

IOU_THRESHOLD = 0.6
MAX_DETECTIONS = 100


def postprocess(outputs, anchors, score_threshold=1e-8, iou_threshold=IOU_THRESHOLD,
                max_detections=MAX_DETECTIONS, activation="sigmoid"):
    """Decode and suppress.

    Args:
        outputs: {"boxes": (B, A, 4) codes, "classes": (B, A, C) logits}.
        anchors: (A, 4).
        score_threshold: 1e-8 for COCO evaluation, higher (e.g. 0.3) for display.
        activation: "sigmoid" (focal or sigmoid hard-negative loss) or "softmax" (softmax
            hard-negative loss): ``losses.ACTIVATIONS[loss]``.

    Returns:
        dict of boxes (B, K, 4) clipped to [0, 1], scores (B, K), classes (B, K)
        int32 ids >= 1, num_detections (B,) int32.
    """
    boxes = tf.clip_by_value(box_coder.decode(outputs["boxes"], anchors), 0.0, 1.0)
    logits = tf.cast(outputs["classes"], tf.float32)
    scores = tf.sigmoid(logits) if activation == "sigmoid" else tf.nn.softmax(logits)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[..., 1:], max_output_size_per_class=max_detections,
        max_total_size=max_detections, iou_threshold=iou_threshold, score_threshold=score_threshold,
        clip_boxes=False)
    return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores,
            "classes": tf.cast(nms.nmsed_classes, tf.int32) + 1, "num_detections": nms.valid_detections}


class Detector(tf.Module):
    """A trained SSDLite model with its anchors and NMS, callable on image batches."""

    def __init__(self, model, score_threshold=1e-8, activation="sigmoid"):
        super().__init__()
        self.model = model
        self.anchors = tf.constant(model_lib.anchors_for(model))
        self.score_threshold, self.activation = score_threshold, activation
        size = model.input_shape[1:]
        self._detect = tf.function(self._postprocessed, input_signature=[tf.TensorSpec((None, *size), tf.float32)])

    def __call__(self, images):
        """images (B, S, S, 3) in [0, 255] -> dict of boxes, scores, classes, num_detections."""
        return self._detect(images)

    def _postprocessed(self, images):
        return postprocess(self.model(images, training=False), self.anchors, self.score_threshold,
                           activation=self.activation)


def build_inference_model(model, score_threshold=1e-8, activation="sigmoid"):
    """``Detector``: images (B, S, S, 3) in [0, 255] -> boxes, scores, classes, num_detections."""
    if not isinstance(model, keras.Model) or not isinstance(model.output, dict) \
            or set(model.output) != {"boxes", "classes"}:
        raise ValueError("`build_inference_model` needs a model from `build_ssdlite` (outputs 'boxes' and "
                         "'classes').")
    return Detector(model, score_threshold, activation)
