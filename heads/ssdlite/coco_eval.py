"""COCO detection metrics through ``pycocotools.cocoeval.COCOeval``.

Ground truth and detections are converted to COCO json (absolute ``[x, y, w,
h]`` boxes), so the same evaluation runs for TFDS COCO and for the synthetic
shapes. ``evaluate`` returns AP@[.5:.95] ("map"), AP50, AP75, AP small / medium /
large and AR@1/10/100, COCOeval's 12 numbers; a number without ground truth to
measure (COCOeval's -1, e.g. "map_large" on a set without large objects) is
``None`` (``null`` in metrics.json), never 0.
"""

import contextlib
import copy
import io

import numpy as np

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100",
              "ar_small", "ar_medium", "ar_large")
# COCOeval's object sizes (areaRng, in pixels, bounds included) and the size each stat measures.
AREA_RANGES = {"all": (0, 1e10), "small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, 1e10)}
STAT_AREAS = dict(zip(STAT_NAMES, ("all", "all", "all", "small", "medium", "large", "all", "all", "all", "small",
                                   "medium", "large")))


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


def _sizes_with_ground_truth(gt):
    """The ``AREA_RANGES`` names that hold at least one non-crowd ground-truth box of ``gt``."""
    areas = [a["area"] for a in gt["annotations"] if not a.get("iscrowd", 0)]
    return {size for size, (low, high) in AREA_RANGES.items() if any(low <= area <= high for area in areas)}


def evaluate(gt, results):
    """COCOeval bbox metrics of ``results`` (a COCO results list) on ``gt`` (a COCO
    dataset dict): ``{name: float or None for name in STAT_NAMES}``.

    ``None`` where there is nothing to measure: no (non-crowd) ground-truth box of
    that stat's size (COCOeval's -1; AP small / medium / large use areas < 32^2,
    32^2-96^2, > 96^2 pixels). Without detections every other number is 0.

    Example:
        >>> evaluate(ground_truth(images, class_names), detections)["map_large"]  # None: no large objects
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:  # COCO.loadRes refuses an empty list; nothing found: 0 wherever there was something to find
        sizes = _sizes_with_ground_truth(gt)
        return {name: 0.0 if STAT_AREAS[name] in sizes else None for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: None if value < 0 else float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}
