"""Synthetic detection scenes and COCO evaluation (issue 5, third part)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.data import shapes
from mobilenet_tf.heads.ssdlite import coco_eval


def _scenes(n=8, size=64):
    images = []
    for index, (image, target) in enumerate(shapes.synthetic_detection(n, size, 5).as_numpy_iterator()):
        images.append(dict(id=index + 1, height=size, width=size, **target))
    return images


def test_synthetic_boxes_enclose_exactly_the_visible_pixels():
    for index in range(6):
        scene = shapes.render_scene(64, 5, tf.constant([0, index], tf.int64), max_objects=6,
                                    radius_range=(0.06, 0.25))
        label, target = scene["label"].numpy(), {key: scene[key].numpy() for key in ("boxes", "classes", "valid")}
        assert target["valid"].any()
        for box, cls, valid in zip(target["boxes"], target["classes"], target["valid"]):
            if not valid:
                continue
            assert 1 <= cls < 5 and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
            y0, x0, y1, x1 = (np.round(box * 64)).astype(int)
            assert np.any(label[y0:y1, x0:x1] == cls)  # the object's class is inside its box
        # Every labelled pixel lies inside some box of its class.
        ys, xs = np.nonzero(label[..., 0])
        inside = np.zeros(len(ys), bool)
        for box, cls, valid in zip(target["boxes"], target["classes"], target["valid"]):
            if valid:
                y0, x0, y1, x1 = box * 64
                inside |= (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1) & (label[ys, xs, 0] == cls)
        assert inside.all()


def test_coco_metrics_perfect_shifted_and_empty(tmp_path):
    images = _scenes()
    gt = coco_eval.ground_truth(images, shapes.class_names(5))
    json.dumps(gt)  # serialisable COCO json
    assert gt["categories"][0] == {"id": 1, "name": "disc_hue0"} and len(gt["categories"]) == 4
    perfect = []
    for image in images:
        keep = image["valid"]
        perfect += coco_eval.detections(image["id"], 64, 64, image["boxes"][keep], np.ones(keep.sum()),
                                        image["classes"][keep], keep.sum())
    assert coco_eval.evaluate(gt, perfect)["map"] == pytest.approx(1.0)
    shifted = [dict(d, bbox=[d["bbox"][0] + 0.3 * d["bbox"][2], *d["bbox"][1:]]) for d in perfect]
    metrics = coco_eval.evaluate(gt, shifted)
    # Shifted by 30% of its width, a box keeps IoU 0.7 / 1.3 = 0.54: it counts at the 0.50
    # threshold only, 1 of AP@[.5:.95]'s 10 thresholds.
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map75"] == 0.0
    assert metrics["map"] == pytest.approx(0.1)
    wrong_class = [dict(d, category_id=d["category_id"] % 4 + 1) for d in perfect]
    assert coco_eval.evaluate(gt, wrong_class)["map"] < 0.3
    # No detections: 0.0 wherever there is ground truth, None for sizes with none.
    perfect_metrics = coco_eval.evaluate(gt, perfect)
    assert coco_eval.evaluate(gt, []) == {
        name: None if perfect_metrics[name] is None else 0.0 for name in coco_eval.STAT_NAMES}


def test_sizes_without_ground_truth_are_none_not_zero():
    """COCOeval's -1 (no ground truth of that size) is None (null in metrics.json), never 0."""
    # Two 40x40 images with small boxes only (areas < 32^2 pixels): no medium or large objects.
    images = [dict(id=k + 1, height=40, width=40, boxes=np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]),
                   classes=np.array([1, 2]), valid=np.array([True, True])) for k in range(2)]
    gt = coco_eval.ground_truth(images, ["background", "a", "b"])
    assert max(a["area"] for a in gt["annotations"]) < 32 ** 2
    perfect = [d for image in images for d in coco_eval.detections(
        image["id"], 40, 40, image["boxes"], np.ones(2), image["classes"], 2)]
    metrics = coco_eval.evaluate(gt, perfect)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_small"] == pytest.approx(1.0)
    assert metrics["ar_small"] == pytest.approx(1.0)
    for name in ("map_medium", "map_large", "ar_medium", "ar_large"):
        assert metrics[name] is None, (name, metrics[name])
    assert json.loads(json.dumps(metrics))["map_large"] is None  # written as null
    # Without detections: 0 where there was something to find, None where there was not.
    empty = coco_eval.evaluate(gt, [])
    assert empty["map"] == empty["map_small"] == empty["ar100"] == 0.0
    assert empty["map_medium"] is None and empty["map_large"] is None and empty["ar_large"] is None
    # A missed detection of a size that exists still reads 0 (a failure), not None.
    one = coco_eval.evaluate(gt, perfect[:1])
    assert 0 < one["map_small"] < 1 and one["map_large"] is None
