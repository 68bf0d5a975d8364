"""Faster R-CNN (heads/faster_rcnn): Table 13's sizes, grid anchors, the two stages
end to end, detections by hand, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.heads.faster_rcnn import anchors, model as frcnn


# V1 paper Table 13, Faster R-CNN on MobileNet V1 (91 classes, 300 proposals): 6.1M
# parameters, 25.2B MAdds at 300, 30.5B at 600. Measured: 6.04M conv / dense parameters,
# 25.224B and 30.494B (second stage at 7x7: the layers after C4 dilated). The reference
# code's strided Conv2d_12 (4x4 second stage) would give 9.52B and 14.79B.
def test_size_matches_table_13():
    model = frcnn.build_faster_rcnn("v1", num_classes=91)
    at_300, at_600 = frcnn.profile(model, (300, 300)), frcnn.profile(model, (600, 600))
    assert abs(at_300["params"] / 6.1e6 - 1) < 0.02, at_300["params"]
    assert abs(at_300["madds"] / 25.2e9 - 1) < 0.01, at_300["madds"]
    assert abs(at_600["madds"] / 30.5e9 - 1) < 0.01, at_600["madds"]
    assert at_300["second_stage_madds"] == at_600["second_stage_madds"]  # 300 crops of 7x7 at any size
    strided = frcnn.profile(frcnn.build_faster_rcnn("v1", num_classes=91, second_stage_stride=2), (300, 300))
    assert strided["params"] == at_300["params"] and strided["madds"] < 0.4 * at_300["madds"]


def test_grid_anchors_follow_the_reference_generator():
    spec = anchors.GridAnchorSpec()
    boxes = anchors.grid_anchors((2, 3), (32, 48), spec).numpy() * [32, 48, 32, 48]
    assert boxes.shape == (2 * 3 * 12, 4) and spec.boxes_per_location == 12
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(centres.reshape(2, 3, 12, 2)[1, 2], np.tile([16.0, 32.0], (12, 1)), atol=1e-4)
    sides = boxes[:12, 2:] - boxes[:12, :2]
    areas = sorted(np.round(np.sqrt(sides.prod(axis=1))).astype(int))
    assert areas == sorted([64, 128, 256, 512] * 3)  # scales 0.25-2 of 256, each at ratios 1/2, 1, 2
    ratios = sorted(np.round(sides[:, 0] / sides[:, 1], 3))
    assert ratios == sorted([2.0, 1.0, 0.5] * 4)  # height / width = 1 / aspect ratio


def test_two_stages_end_to_end_on_a_padded_batch():
    model = frcnn.build_faster_rcnn("v1", num_classes=5, alpha=0.25, max_proposals=20)
    images = tf.random.uniform((2, 128, 160, 3), 0, 255, seed=1)
    out = model(images)
    assert out["rpn_boxes"].shape == (2, 8 * 10 * 12, 4) and out["rpn_objectness"].shape == (2, 960, 2)
    assert out["proposals"].shape == (2, 20, 4) and out["classes"].shape == (2, 20, 5)
    assert out["boxes"].shape == (2, 20, 4, 4)
    proposals = out["proposals"].numpy()
    assert np.all((proposals >= 0) & (proposals <= 1)) and np.all(out["num_proposals"].numpy() <= 20)
    # The second stage runs the backbone's own layers after C4: one set of weights.
    first_names = {layer.name for layer in model.first_stage.layers}
    assert "conv_pw_13" not in first_names and "conv_pw_11" in first_names
    assert model.second_stage.get_layer("conv_pw_13").kernel.shape == (1, 1, 256, 256)
    names = [w.path for w in model.weights]
    assert len(names) == len(set(names))
    detections = frcnn.detect(out)
    num = detections["num_detections"].numpy()
    assert detections["boxes"].shape == (2, 100, 4) and np.all(num > 0)
    classes = detections["classes"].numpy()
    assert all(1 <= classes[i, :n].min() and classes[i, :n].max() <= 4 for i, n in enumerate(num))


def test_other_backbones_take_their_stride_16_tap():
    model = frcnn.build_faster_rcnn("v3_small", num_classes=3, alpha=0.5, max_proposals=8, second_stage_stride=2)
    out = model(tf.zeros((1, 160, 160, 3)))
    assert out["classes"].shape == (1, 8, 3)
    assert model.second_stage.input_shape[1:3] == (7, 7)


def test_detect_decodes_per_class_boxes_and_ignores_padding_proposals():
    proposals = tf.constant([[[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]]])
    logits = np.full((1, 3, 3), -10.0, np.float32)
    logits[0, 0, 2] = 10.0  # proposal 0: class 2
    logits[0, 1, 1] = 10.0  # proposal 1: class 1
    logits[0, 2, 1] = 10.0  # proposal 2 is padding: never a detection
    codes = np.zeros((1, 3, 2, 4), np.float32)
    codes[0, 1, 0] = [10.0 * 0.1 / 0.3, 0, 0, 0]  # class 1's box on proposal 1 moves down by 0.1
    out = frcnn.detect({"proposals": proposals, "num_proposals": tf.constant([2]), "classes": logits,
                        "boxes": codes}, score_threshold=0.5)
    assert int(out["num_detections"][0]) == 2
    got = {int(c): b for c, b in zip(out["classes"].numpy()[0, :2], out["boxes"].numpy()[0, :2])}
    np.testing.assert_allclose(got[2], [0.1, 0.1, 0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(got[1], [0.7, 0.6, 1.0, 0.9], atol=1e-5)  # clipped at the bottom edge


@pytest.mark.parametrize("kwargs, message", [
    (dict(backbone="v9"), "unknown model name"),
    (dict(backbone="squeezenet1_1", num_classes=3), "stride-16 map 'C4' and layers after it"),
    (dict(max_proposals=0), "`max_proposals` must be an integer >= 1"),
    (dict(second_stage_stride=4), "`second_stage_stride` must be 1 or 2"),
    (dict(num_classes=1), "`num_classes` counts the background"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        frcnn.build_faster_rcnn(**kwargs)
