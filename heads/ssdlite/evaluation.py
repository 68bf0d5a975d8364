"""COCO evaluation of an SSDLite model: decode + NMS, detections in COCO json,
``pycocotools`` COCOeval (``coco_eval``).

    >>> evaluator = COCOEvaluator(val_split, make_eval_pipeline(val_split, input_size=160, batch_size=16))
    >>> evaluator(model)            # {"map": ..., "map50": ..., "map75": ...}
"""

from mobilenet_tf.heads.ssdlite import coco_eval, data, postprocess


class COCOEvaluator:
    """COCO mAP of a model on the validation split: decode + NMS (score >= 1e-8,
    100 per image), detections in COCO json, ``pycocotools`` COCOeval. The ground
    truth is gathered once; ``last`` keeps the latest (results, detections).

    Args:
        split: the ``DetectionSplit`` evaluated (class names, category ids).
        eval_ds: its ``data.make_eval_pipeline`` batches (images, info).
        activation: "sigmoid" or "softmax" class scores (``losses.ACTIVATIONS[loss]``).
    """

    result_keys = ("map", "map50", "map75")  # what a call returns (``fit`` logs val_<key>)

    def __init__(self, split, eval_ds, activation="sigmoid"):
        self.split, self.eval_ds, self.activation = split, eval_ds, activation
        images, self.dropped_boxes = data.ground_truth_images(eval_ds)
        self.ground_truth = coco_eval.ground_truth(images, split.class_names, split.category_ids)
        self.last = None
        self._detector = None

    def detector(self, model):
        """The ``Detector`` (decode + NMS, traced once) for ``model``."""
        if self._detector is None or self._detector.model is not model:
            self._detector = postprocess.build_inference_model(model, activation=self.activation)
        return self._detector

    def detect(self, model):
        """COCO results list for every validation image."""
        detector = self.detector(model)
        results = []
        for images, info in self.eval_ds.as_numpy_iterator():
            out = {key: value.numpy() for key, value in detector(images).items()}
            for i in range(len(out["num_detections"])):
                results += coco_eval.detections(
                    info["image_id"][i], info["height"][i], info["width"][i], out["boxes"][i], out["scores"][i],
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
