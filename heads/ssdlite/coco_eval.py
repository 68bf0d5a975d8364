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


def ground_truth(images, class_names, category_ids=None):
    """COCO dataset dict from per-image dicts with "id", "height", "width", normalised
    "boxes" (N, 4), "classes" (N,) ids >= 1, "valid" (N,) and optionally "crowd" (N,)
    and "area" (N,) (COCO's segment area in pixels; <= 0: the box's area).

    ``category_ids[k]`` is the json id of class ``k`` (default: ``k``).
    """
    category_ids = category_ids if category_ids is not None else list(range(len(class_names)))
    annotations = []
    for image in images:
        count = len(image["classes"])
        crowd, area = image.get("crowd", np.zeros(count, bool)), image.get("area", np.zeros(count))
        for box, cls, valid, is_crowd, seg_area in zip(image["boxes"], image["classes"], image["valid"], crowd, area):
            if not valid:
                continue
            xywh = _xywh(box, image["height"], image["width"])
            annotations.append({"id": len(annotations) + 1, "image_id": int(image["id"]),
                                "category_id": int(category_ids[int(cls)]), "bbox": xywh,
                                "area": float(seg_area) if seg_area > 0 else xywh[2] * xywh[3],
                                "iscrowd": int(is_crowd)})
    return {
        "images": [{"id": int(i["id"]), "height": int(i["height"]), "width": int(i["width"])} for i in images],
        "annotations": annotations,
        "categories": [{"id": int(category_ids[k]), "name": name} for k, name in enumerate(class_names) if k > 0],
    }


def detections(image_id, height, width, boxes, scores, classes, num_detections, category_ids=None):
    """COCO results list for one image's ``postprocess`` output (normalised boxes);
    ``category_ids`` maps class ids to json ids (default: identity)."""
    to_json = (lambda c: int(category_ids[c])) if category_ids is not None else int
    return [{"image_id": int(image_id), "category_id": to_json(int(classes[k])), "score": float(scores[k]),
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
