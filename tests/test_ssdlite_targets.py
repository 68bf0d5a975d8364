"""SSDLite anchors, box coder and matcher (issue 5, first part): hand-made cases."""

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.heads.ssdlite import anchors, box_coder, matcher

# Feature maps of a 320x320 input: C4_expand (stride 16), C5 (32), then four stride-2 extras.
SIZES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_box_specs_follow_the_reference_generator():
    specs = anchors.box_specs()
    assert anchors.anchors_per_location() == [3, 6, 6, 6, 6, 6]
    assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    scales = [0.2 + 0.15 * i for i in range(6)]  # 0.2 ... 0.95
    for layer in range(1, 6):
        assert [s for s, _ in specs[layer][:5]] == pytest.approx([scales[layer]] * 5)
        next_scale = scales[layer + 1] if layer < 5 else 1.0
        assert specs[layer][5] == pytest.approx((np.sqrt(scales[layer] * next_scale), 1.0))


def test_anchor_counts_positions_and_shapes():
    boxes = anchors.generate(SIZES_320)
    assert boxes.shape == (20 * 20 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4)  # 2034, the TF OD API's count
    # First location of layer 0: centre (0.025, 0.025); box 0 is 0.1 x 0.1.
    np.testing.assert_allclose(boxes[0], [-0.025, -0.025, 0.075, 0.075], atol=1e-6)
    # Box 1 (ratio 2) is wider than high: h = 0.2 / sqrt 2, w = 0.2 * sqrt 2.
    h, w = boxes[1, 2] - boxes[1, 0], boxes[1, 3] - boxes[1, 1]
    assert h == pytest.approx(0.2 / np.sqrt(2)) and w == pytest.approx(0.2 * np.sqrt(2))
    # Order is row, column, box: anchor 3 is the next column (x centre 0.075).
    assert (boxes[3, 1] + boxes[3, 3]) / 2 == pytest.approx(0.075)
    # The last layer has one location at the centre, its largest box 1.0-scaled interpolated.
    last = boxes[-6:]
    np.testing.assert_allclose((last[:, 0] + last[:, 2]) / 2, 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="has 5 layers"):
        anchors.generate(SIZES_320[:5])


def test_coder_round_trip_and_known_values():
    anchor = np.array([[0.2, 0.2, 0.6, 0.4]], np.float32)  # centre (0.4, 0.3), size 0.4 x 0.2
    box = np.array([[0.3, 0.1, 0.5, 0.5]], np.float32)  # centre (0.4, 0.3), size 0.2 x 0.4
    codes = box_coder.encode(box, anchor).numpy()
    np.testing.assert_allclose(codes, [[0.0, 0.0, 5 * np.log(0.5), 5 * np.log(2.0)]], atol=1e-5)
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 1, (100, 2, 2)), axis=1)
    boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], -1)
    many_anchors = anchors.generate(SIZES_320)[:100]
    decoded = box_coder.decode(box_coder.encode(boxes, many_anchors), many_anchors).numpy()
    np.testing.assert_allclose(decoded, boxes, atol=1e-5)


def test_iou_by_hand():
    a = [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]]
    b = [[0.0, 0.0, 0.5, 1.0], [2.0, 2.0, 3.0, 3.0], [0.5, 0.5, 0.5, 0.5]]
    np.testing.assert_allclose(matcher.iou(a, b).numpy(), [[0.5, 0.0, 0.0], [0.5, 0.0, 0.0]], atol=1e-6)


def test_matcher_thresholds_force_match_and_padding():
    anchor_boxes = np.array([
        [0.0, 0.0, 0.5, 0.5],   # 0: IoU 1.0 with gt 0
        [0.0, 0.0, 0.5, 0.6],   # 1: IoU 0.83 with gt 0
        [0.5, 0.5, 1.0, 1.0],   # 2: IoU 0.25 with gt 1 (below 0.5, but gt 1's best: forced)
        [0.0, 0.5, 0.5, 1.0],   # 3: nothing
        [0.5, 0.5, 0.6, 0.6],   # 4: IoU 0.16 with gt 1 (below 0.5, not its best)
    ], np.float32)
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5]], np.float32)
    valid = np.array([True, True, False])  # row 2 is padding (identical to gt 0: must not match)
    matches = matcher.match(gt, valid, anchor_boxes).numpy()
    np.testing.assert_array_equal(matches, [0, 0, 1, matcher.BACKGROUND, matcher.BACKGROUND])
    box_targets, class_targets, matched = matcher.assign_targets(gt, np.array([7, 3, 9]), valid, anchor_boxes)
    np.testing.assert_array_equal(class_targets.numpy(), [7, 7, 3, -1, -1])
    np.testing.assert_array_equal(matched.numpy(), [True, True, True, False, False])
    np.testing.assert_allclose(box_targets.numpy()[0], 0.0, atol=1e-5)  # identical box: zero code
    assert np.all(box_targets.numpy()[3:] == 0)
    decoded = box_coder.decode(box_targets[2:3], anchor_boxes[2:3]).numpy()
    np.testing.assert_allclose(decoded, gt[1:2], atol=1e-5)


def test_two_boxes_wanting_the_same_anchor_and_an_empty_image():
    anchor_boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.1, 0.1]], np.float32)
    gt = np.array([[0.0, 0.0, 0.9, 0.9], [0.0, 0.0, 0.95, 0.95]], np.float32)
    matches = matcher.match(gt, np.array([True, True]), anchor_boxes).numpy()
    assert matches[0] == 0  # both force-claim anchor 0: the first box wins
    empty = matcher.assign_targets(np.zeros((4, 4), np.float32), np.zeros(4, np.int32), np.zeros(4, bool),
                                   anchor_boxes)
    assert not empty[2].numpy().any() and np.all(empty[1].numpy() == matcher.BACKGROUND)


def test_assignment_runs_inside_tf_data():
    anchor_boxes = anchors.generate(SIZES_320)
    ds = tf.data.Dataset.from_tensors((tf.constant([[0.1, 0.1, 0.4, 0.5], [0, 0, 0, 0]], tf.float32),
                                       tf.constant([2, 0]), tf.constant([True, False])))
    ds = ds.map(lambda b, c, v: matcher.assign_targets(b, c, v, anchor_boxes))
    box_targets, class_targets, matched = next(iter(ds))
    assert box_targets.shape == (2034, 4) and matched.numpy().sum() >= 1
    assert set(np.unique(class_targets.numpy())) == {-1, 2}
