"""SSDLite input pipeline: box cleaning, SSD crop / zoom-out / flip keep boxes on
their pixels, targets inside tf.data, TFDS COCO under mock_data, category ids."""

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.heads import ssdlite
from mobilenet_tf.heads.ssdlite import coco_eval, data, losses, matcher


def _box_image(box, size=(120, 160)):
    """A float image, 255 inside the normalised box and 0 elsewhere."""
    h, w = size
    image = np.zeros((h, w, 3), np.float32)
    y0, x0, y1, x1 = np.round(np.asarray(box) * [h, w, h, w]).astype(int)
    image[y0:y1, x0:x1] = 255.0
    return image


def _assert_box_on_pixels(image, box):
    """The box (normalised) covers the bright pixels, to a pixel."""
    image = np.asarray(image)[..., 0]
    h, w = image.shape
    ys, xs = np.nonzero(image > 127)
    assert len(ys), "the object left the image"
    found = np.array([ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w])
    np.testing.assert_allclose(np.asarray(box), found, atol=1.5 / min(h, w))


def test_clean_boxes_clips_drops_and_counts():
    boxes = tf.constant([[0.1, 0.1, 0.5, 0.5],      # fine
                         [-0.2, 0.3, 0.4, 1.3],     # out of range: clipped, kept
                         [0.5, 0.5, 0.5, 0.9],      # zero height: dropped
                         [0.6, 0.6, 0.2, 0.9],      # ymin > ymax: dropped
                         [np.nan, 0.1, 0.2, 0.3],   # NaN: dropped
                         [0.1, 0.1, 0.3, 0.3]])     # crowd (keep False): excluded, not counted
    classes = tf.constant([1, 2, 3, 1, 2, 9])  # an excluded object's class is not checked
    keep = tf.constant([True] * 5 + [False])
    clipped, valid, dropped = data.clean_boxes(boxes, classes, keep, num_classes=5)
    assert valid.numpy().tolist() == [True, True, False, False, False, False]
    assert int(dropped) == 3
    np.testing.assert_allclose(clipped[1], [0.0, 0.3, 0.4, 1.0])
    assert np.isfinite(clipped.numpy()).all()
    # A class id >= num_classes is a label-mapping bug: a clear error, eager or in tf.data.
    with pytest.raises(ValueError, match=r"class ids must be in \[1, 5\).*got \[7\]"):
        data.clean_boxes(boxes[:1], tf.constant([7]), tf.constant([True]), num_classes=5)
    ds = tf.data.Dataset.from_tensors((boxes[:1], tf.constant([7]))).map(
        lambda b, c: data.clean_boxes(b, c, tf.constant([True]), 5)[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"class ids must be in \[1, 5\)"):
        next(iter(ds))


def test_a_recipe_reports_a_data_check_failing_in_tf_data_as_bad_input(capsys):
    from mobilenet_tf.training import engine
    from mobilenet_tf.training.config import RunOptions

    def main(config):
        ds = tf.data.Dataset.from_tensors(tf.constant([[0.1, 0.1, 0.3, 0.3]])).map(
            lambda b: data.clean_boxes(b, tf.constant([7]), tf.constant([True]), 5)[1])
        next(iter(ds))

    with pytest.raises(SystemExit) as exit_info:
        engine.recipe_main(main, RunOptions, argv=[])
    assert exit_info.value.code == 2
    assert "error: bad input data: object class ids must be in [1, 5)" in capsys.readouterr().err


def test_ssd_crop_keeps_boxes_on_their_pixels():
    box = [0.3, 0.35, 0.7, 0.6]
    crops = 0
    for seed in range(24):
        image, boxes, valid = data.random_ssd_crop(tf.constant(_box_image(box)), tf.constant([box]),
                                                   tf.constant([True]), seed=seed)
        assert image.shape[0] >= 0.3 * 120 - 1 and image.shape[1] >= 0.3 * 160 - 1
        aspect = image.shape[1] / image.shape[0]
        assert 0.5 - 0.05 <= aspect <= 2.0 + 0.05 or image.shape[:2] == (120, 160)  # pixel aspect 1/2..2
        crops += image.shape[:2] != (120, 160)
        assert bool(valid[0])  # a single object: a crop must contain its centre
        _assert_box_on_pixels(image, boxes[0])  # and the box still sits on the object
    assert crops >= 6, crops


def test_ssd_crop_samples_patches_and_respects_the_iou_choice():
    """Over many draws: some crops, some whole images, every crop keeps a box."""
    tf.random.set_seed(0)
    box = tf.constant([[0.3, 0.3, 0.6, 0.6]])
    sizes = []
    for _ in range(60):
        image, _, valid = data.random_ssd_crop(tf.zeros((100, 100, 3)), box, tf.constant([True]))
        sizes.append(image.shape[:2])
        assert bool(valid[0])  # a single object: a crop must contain its centre
    whole = sum(s == (100, 100) for s in sizes)
    assert 3 <= whole <= 40 and len(set(sizes)) > 10
    # No valid box: never cropped.
    image, _, _ = data.random_ssd_crop(tf.zeros((100, 100, 3)), box, tf.constant([False]))
    assert image.shape[:2] == (100, 100)
    # A 5% box overlaps any patch (side >= 0.3) by IoU <= 0.0025 / 0.09 < 0.1, the smallest
    # minimum: no patch qualifies, so the image is always kept whole.
    tiny = tf.constant([[0.5, 0.5, 0.55, 0.55]])
    for _ in range(20):
        image, _, valid = data.random_ssd_crop(tf.zeros((100, 100, 3)), tiny, tf.constant([True]))
        assert image.shape[:2] == (100, 100) and bool(valid[0])


def test_zoom_out_and_flip_move_boxes_with_pixels():
    box = [0.2, 0.1, 0.5, 0.4]
    scales = []
    for seed in range(16):
        image, boxes = data.random_zoom_out(tf.constant(_box_image(box)), tf.constant([box]), seed=seed)
        scales.append(image.shape[0] / 120)
        shifted = np.asarray(image) - data.MEAN_PIXEL  # the canvas is the mean pixel
        _assert_box_on_pixels(np.where(shifted > 1, 255.0, 0.0), boxes[0])
    # About half keep the image; the others spread over 1..4 (seeded ops must not share draws).
    assert 3 <= scales.count(1.0) <= 13 and max(scales) > 2.5, scales
    image, boxes = data.flip_left_right(tf.constant(_box_image(box)), tf.constant([box]))
    _assert_box_on_pixels(image, boxes[0])
    np.testing.assert_allclose(boxes[0], [0.2, 0.6, 0.5, 0.9], atol=1e-6)


def test_augment_and_targets_for_crowded_empty_and_degenerate_images():
    model = ssdlite.build_ssdlite("v3_small", num_classes=5, input_size=128, alpha=0.5)
    anchors = tf.constant(ssdlite.anchors_for(model))
    cases = {
        "normal": ([[0.2, 0.2, 0.6, 0.7]], [2], [False]),
        "empty": (np.zeros((0, 4)), [], []),
        "crowd only": ([[0.2, 0.2, 0.6, 0.7]], [2], [True]),
        "degenerate": ([[0.5, 0.5, 0.5, 0.5], [2.0, 2.0, 3.0, 3.0]], [1, 1], [False, False]),
    }
    for name, (boxes, classes, crowd) in cases.items():
        objects = {"boxes": tf.constant(boxes, tf.float32), "classes": tf.constant(classes, tf.int32),
                   "crowd": tf.constant(crowd, tf.bool)}
        image, boxes_out, classes_out, valid = data.augment(tf.zeros((90, 120, 3), tf.uint8), objects, 5, 128,
                                                            zoom_out=True, jitter=True)
        assert image.shape == (128, 128, 3)
        targets = data.encode_targets(boxes_out, classes_out, valid, anchors, max_boxes=10)
        assert targets["boxes"].shape == (anchors.shape[0], 5) and np.isfinite(targets["boxes"].numpy()).all()
        matched = int(tf.reduce_sum(targets["boxes"][:, 4]))
        if name == "normal":
            assert matched >= 1 and set(np.unique(targets["classes"])) == {matcher.BACKGROUND, 2}
        else:
            assert matched == 0 and np.all(targets["classes"].numpy() == matcher.BACKGROUND), name
    # An all-background batch gives a finite loss (no division by zero matches).
    codes = tf.zeros((1, anchors.shape[0], 4))
    logits = tf.zeros((1, anchors.shape[0], 5))
    box_loss = losses.BoxLoss()(targets["boxes"][None], codes)
    class_loss = losses.ClassLoss()(targets["classes"][None], logits)
    assert np.isfinite(float(box_loss)) and float(box_loss) == 0.0 and np.isfinite(float(class_loss))


def test_pad_objects_keeps_valid_boxes_first():
    boxes = tf.reshape(tf.range(12, dtype=tf.float32), (3, 4))
    padded, classes, valid = data.pad_objects(boxes, tf.constant([1, 2, 3]), tf.constant([False, True, True]), 2)
    assert valid.numpy().tolist() == [True, True] and classes.numpy().tolist() == [2, 3]
    padded, classes, valid = data.pad_objects(boxes, tf.constant([1, 2, 3]), tf.constant([True, True, True]), 5)
    assert padded.shape == (5, 4) and valid.numpy().tolist() == [True, True, True, False, False]


@pytest.mark.slow(seconds=6)
def test_train_pipeline_batches_targets_for_fit():
    model = ssdlite.build_ssdlite("v3_small", num_classes=5, input_size=96, alpha=0.5)
    split = data.synthetic_split(True, 8, 96)
    ds = data.make_train_pipeline(split, ssdlite.anchors_for(model), input_size=96, batch_size=4, zoom_out=True,
                                  jitter=True)
    images, targets = next(iter(ds))
    anchors = ssdlite.anchors_for(model).shape[0]
    assert images.shape == (4, 96, 96, 3) and images.dtype == tf.float32
    assert targets["boxes"].shape == (4, anchors, 5) and targets["classes"].shape == (4, anchors)
    assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255
    assert int(tf.reduce_sum(targets["boxes"][..., 4])) >= 4  # every scene has an object, forced to an anchor
    outputs = model(images, training=False)
    assert outputs["boxes"].shape[:2] == targets["boxes"].shape[:2]


@pytest.mark.slow(seconds=5)
def test_coco_loader_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE, data_dir=str(tmp_path)):
        split = data.coco_split("validation", data_dir=str(tmp_path))
        eval_ds = data.make_eval_pipeline(split, input_size=96, batch_size=2)
        images, dropped = data.ground_truth_images(eval_ds)
        model = ssdlite.build_ssdlite("v3_small", num_classes=split.num_classes, input_size=96, alpha=0.5)
        train = data.make_train_pipeline(split, ssdlite.anchors_for(model), input_size=96, batch_size=2)
        batch_images, targets = next(iter(train))
    assert split.num_examples == 3 and split.num_classes == 81 and len(split.category_ids) == 81
    assert split.category_ids[1] == 1 and split.category_ids[80] == 90 and 12 not in split.category_ids
    assert len(images) == 3 and all(image["height"] > 0 for image in images)
    # Mock boxes are random (many have ymin > ymax): those are dropped and counted, never NaN.
    assert dropped > 0
    assert batch_images.shape == (2, 96, 96, 3) and np.isfinite(targets["boxes"].numpy()).all()
    classes = targets["classes"].numpy()
    assert classes.max() <= 80 and classes.min() >= matcher.BACKGROUND
    gt = coco_eval.ground_truth(images, split.class_names, split.category_ids)
    assert {c["id"] for c in gt["categories"]} == set(data.COCO_CATEGORY_IDS)
    assert all(a["category_id"] in data.COCO_CATEGORY_IDS for a in gt["annotations"])
    assert any(a["iscrowd"] for a in gt["annotations"])  # crowd boxes go to COCOeval as crowd


def test_unknown_coco_version_and_category_round_trip():
    with pytest.raises(ValueError, match="coco/2017"):
        data.coco_split("validation", name="coco/2099")
    # Contiguous class 12 is COCO category 13 (id 12 does not exist): gt and detections
    # both use COCO ids, so a perfect detection scores AP 1.
    ids = [0, *data.COCO_CATEGORY_IDS]
    image = {"id": 7, "height": 100, "width": 200, "boxes": np.array([[0.1, 0.2, 0.5, 0.6]]),
             "classes": np.array([12]), "valid": np.array([True]), "area": np.array([0.0])}
    gt = coco_eval.ground_truth([image], ["background"] + [str(i) for i in range(80)], ids)
    assert gt["annotations"][0]["category_id"] == 13 and gt["annotations"][0]["area"] == pytest.approx(3200.0)
    results = coco_eval.detections(7, 100, 200, image["boxes"], [0.9], [12], 1, ids)
    assert results[0]["category_id"] == 13
    assert coco_eval.evaluate(gt, results)["map"] == pytest.approx(1.0)


def test_eval_ground_truth_beyond_max_boxes_is_counted_as_dropped():
    """An image with more valid boxes than ``max_boxes`` keeps the first ``max_boxes``
    valid ones (invalid rows go last) and counts the rest in "dropped"."""
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.4, 0.9]] + [[0.1, 0.1, 0.3, 0.3]] * 5, np.float32)
    objects = dict(boxes=boxes, classes=np.ones(7, np.int64), crowd=np.zeros(7, bool),
                   area=np.ones(7, np.float32), image_id=np.int64(1))
    ds = tf.data.Dataset.from_tensors((np.zeros((32, 32, 3), np.uint8), objects))
    split = data.DetectionSplit(ds, 1, 2, ["background", "thing"], [0, 1])
    eval_ds = data.make_eval_pipeline(split, input_size=32, batch_size=1, max_boxes=4)
    images, dropped = data.ground_truth_images(eval_ds)
    assert dropped == 1 + 2  # one inverted box, two valid boxes beyond the 4 kept
    assert images[0]["valid"].tolist() == [True] * 4
    assert images[0]["boxes"][1].tolist() == pytest.approx([0.1, 0.1, 0.3, 0.3])
