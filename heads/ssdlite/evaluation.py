"""COCO evaluation of an SSDLite model: decode + NMS, detections in COCO json,
``pycocotools`` COCOeval (``coco_eval``).

    >>> evaluator = COCOEvaluator(val_split, make_eval_pipeline(val_split, input_size=160, batch_size=16))
    >>> evaluator(model)            # {"map": ..., "map50": ..., "map75": ...}
"""

import numpy as np

from mobilenet_tf.heads.ssdlite import coco_eval, data, postprocess


class COCOEvaluator:
    """COCO mAP of a model on the validation split: decode + NMS (score >= 1e-8,
    100 per image), detections in COCO json, ``pycocotools`` COCOeval. The ground
    truth is gathered once; ``last`` keeps the latest (results, detections).

    Args:
        split: the ``DetectionSplit`` evaluated (class names, category ids).
        eval_ds: its ``data.make_eval_pipeline`` batches (images, info); where info
            has a "window" (B, 2) (padded batches: the image's extent in the canvas,
            ``faster_rcnn.data``), detected boxes are normalised to the canvas.
        activation: "sigmoid" or "softmax" class scores (``losses.ACTIVATIONS[loss]``).
        make_detector: ``model -> (images -> {"boxes", "scores", "classes",
            "num_detections"})``; default: SSD decoding + NMS
            (``postprocess.build_inference_model``).
    """

    result_keys = ("map", "map50", "map75")  # what a call returns (``fit`` logs val_<key>)

    def __init__(self, split, eval_ds, activation="sigmoid", make_detector=None):
        self.split, self.eval_ds, self.activation = split, eval_ds, activation
        self.make_detector = make_detector or (
            lambda model: postprocess.build_inference_model(model, activation=activation))
        images, self.dropped_boxes = data.ground_truth_images(eval_ds)
        self.ground_truth = coco_eval.ground_truth(images, split.class_names, split.category_ids)
        self.last = None
        self._detector = self._detector_model = None

    def detector(self, model):
        """The detector (``make_detector``, traced once) for ``model``."""
        if self._detector is None or self._detector_model is not model:
            self._detector, self._detector_model = self.make_detector(model), model
        return self._detector

    def detect(self, model):
        """COCO results list for every validation image."""
        detector = self.detector(model)
        results = []
        for images, info in self.eval_ds.as_numpy_iterator():
            out = {key: np.asarray(value) for key, value in detector(images).items()}
            boxes = out["boxes"]
            if "window" in info:  # canvas -> image coordinates
                boxes = np.minimum(boxes / np.tile(info["window"], 2)[:, None, :], 1.0)
            for i in range(len(out["num_detections"])):
                results += coco_eval.detections(
                    info["image_id"][i], info["height"][i], info["width"][i], boxes[i], out["scores"][i],
                    out["classes"][i], out["num_detections"][i], self.split.category_ids)
        return results

    def __call__(self, model):
        results = self.detect(model)
        self.last = (coco_eval.evaluate(self.ground_truth, results), results)
        # None (no ground truth at all) becomes NaN: never "best", a gap in the curves.
        return {key: float("nan") if self.last[0][key] is None else self.last[0][key] for key in self.result_keys}

    def final(self, model):
        """(results, detections) of the last evaluation, evaluated now when this process
        ran none (``--eval-only``, or a resumed finished run)."""
        if self.last is None:
            self(model)
        return self.last
