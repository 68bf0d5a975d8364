"""COCO detection metrics through ``pycocotools.cocoeval.COCOeval``.

Ground truth and detections are converted to COCO json (absolute ``[x, y, w,
h]`` boxes), so the same evaluation runs for TFDS COCO and for the synthetic
shapes. ``evaluate`` returns AP@[.5:.95] ("map"), AP50, AP75, AP small / medium /
large and AR@1/10/100, COCOeval's 12 numbers.
"""

import contextlib
import copy
import io

import numpy as np

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100",
              "ar_small", "ar_medium", "ar_large")


def _xywh(box, height, width):
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height]


def ground_truth(images, class_names):
    """COCO dataset dict from per-image dicts with "id", "height", "width", normalised
    "boxes" (N, 4), "classes" (N,) ids >= 1, "valid" (N,) and optionally "crowd" (N,)."""
    annotations = []
    for image in images:
        crowd = image.get("crowd", np.zeros(len(image["classes"]), bool))
        for box, cls, valid, is_crowd in zip(image["boxes"], image["classes"], image["valid"], crowd):
            if not valid:
                continue
            xywh = _xywh(box, image["height"], image["width"])
            annotations.append({"id": len(annotations) + 1, "image_id": int(image["id"]), "category_id": int(cls),
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": int(is_crowd)})
    return {
        "images": [{"id": int(i["id"]), "height": int(i["height"]), "width": int(i["width"])} for i in images],
        "annotations": annotations,
        "categories": [{"id": k, "name": name} for k, name in enumerate(class_names) if k > 0],
    }


def detections(image_id, height, width, boxes, scores, classes, num_detections):
    """COCO results list for one image's ``postprocess`` output (normalised boxes)."""
    return [{"image_id": int(image_id), "category_id": int(classes[k]), "score": float(scores[k]),
             "bbox": _xywh(boxes[k], height, width)} for k in range(int(num_detections))]


def evaluate(gt, results):
    """COCOeval bbox metrics as a dict of ``STAT_NAMES`` (all 0 without detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(max(value, 0.0)) for name, value in zip(STAT_NAMES, evaluator.stats)}
