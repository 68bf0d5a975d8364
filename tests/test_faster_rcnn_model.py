"""Faster R-CNN (heads/faster_rcnn): Table 13's sizes, grid anchors, the two stages
end to end, detections, targets, sampling and losses by hand, fit, bad arguments."""


import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.heads.faster_rcnn import anchors, losses, model as frcnn


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


@pytest.mark.slow(seconds=4)
def test_two_stages_end_to_end_on_a_padded_batch_and_as_a_saved_model(tmp_path):
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
    # The SavedModel detector (any image size) gives the same detections.
    served = tf.saved_model.load(frcnn.save_detector(model, str(tmp_path / "detector")))
    again = served.signatures["serving_default"](images=images)
    np.testing.assert_array_equal(again["num_detections"].numpy(), num)
    np.testing.assert_allclose(again["boxes"].numpy(), detections["boxes"].numpy(), atol=1e-5)
    assert served.signatures["serving_default"](images=tf.zeros((1, 96, 200, 3)))["boxes"].shape == (1, 100, 4)
    assert detections["boxes"].shape == (2, 100, 4) and np.all(num > 0)
    classes = detections["classes"].numpy()
    assert all(1 <= classes[i, :n].min() and classes[i, :n].max() <= 4 for i, n in enumerate(num))


@pytest.mark.parametrize("backbone, alpha", [("v3_small", 0.5), ("v2", 0.35)])
@pytest.mark.slow(seconds=9)
def test_other_backbones_take_their_stride_16_tap_and_train(backbone, alpha):
    model = frcnn.build_faster_rcnn(backbone, num_classes=3, alpha=alpha, max_proposals=8, second_stage_stride=2)
    out = model(tf.zeros((1, 160, 160, 3)))
    assert out["classes"].shape == (1, 8, 3)
    assert model.second_stage.input_shape[1:3] == (7, 7)
    model.compile(optimizer="sgd")
    gt = _ground_truth([[0.2, 0.2, 0.7, 0.7]], [2])
    logs = model.train_on_batch(tf.random.uniform((1, 160, 160, 3), 0, 255, seed=3), gt, return_dict=True)
    assert set(logs) == set(frcnn.LOSS_NAMES) and all(np.isfinite(v) for v in logs.values()), logs


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


def _ground_truth(boxes, classes):
    """Padded (1, N + 1, ...) ground truth of one image (the last row is padding)."""
    boxes = np.concatenate([np.asarray(boxes, np.float32), np.zeros((1, 4), np.float32)])[None]
    classes = np.concatenate([np.asarray(classes, np.int32), [0]])[None]
    return {"boxes": tf.constant(boxes), "classes": tf.constant(classes),
            "valid": tf.constant(np.arange(classes.shape[1])[None] < classes.shape[1] - 1)}


def test_rpn_targets_thresholds_force_match_and_outside_anchors():
    anchor_boxes = tf.constant([[0.1, 0.1, 0.5, 0.5],     # the box itself: positive
                                [0.1, 0.1, 0.5, 0.45],    # IoU 0.875: positive
                                [0.3, 0.3, 0.7, 0.7],     # IoU 0.14: negative
                                [0.1, 0.1, 0.5, 0.25],    # IoU 0.375: ignored
                                [0.6, 0.6, 0.62, 0.62],   # no overlap: negative
                                [-0.2, 0.6, 0.3, 1.1],    # outside the image: never used
                                [0.7, 0.7, 0.95, 0.9]])   # a small box's best anchor (IoU 0.05): forced
    inside = tf.reduce_all((anchor_boxes >= 0) & (anchor_boxes <= 1), axis=1)
    gt = _ground_truth([[0.1, 0.1, 0.5, 0.5], [0.75, 0.75, 0.8, 0.8]], [3, 1])
    positive, negative, codes = losses.rpn_targets(anchor_boxes, inside, gt)
    assert positive.numpy()[0].tolist() == [True, True, False, False, False, False, True]
    assert negative.numpy()[0].tolist() == [False, False, True, False, True, False, False]
    np.testing.assert_allclose(codes.numpy()[0, 0], [0, 0, 0, 0], atol=1e-5)
    empty = {key: value[:, 2:] for key, value in gt.items()}  # only the padding row: no objects
    positive, negative, _ = losses.rpn_targets(anchor_boxes, inside, empty)
    assert not positive.numpy().any() and negative.numpy()[0].tolist() == inside.numpy().tolist()


def test_balanced_sampling_caps_positives_and_fills_with_negatives():
    positive = tf.constant([[True] * 10 + [False] * 30, [True] * 2 + [False] * 38])
    negative = ~positive
    chosen_positive, chosen_negative = losses.sample(positive, negative, 16, 0.25, seed=3)
    counts = tf.reduce_sum(tf.cast(chosen_positive, tf.int32), axis=1).numpy().tolist()
    assert counts == [4, 2]  # at most 16 * 0.25 positives
    assert tf.reduce_sum(tf.cast(chosen_negative, tf.int32), axis=1).numpy().tolist() == [12, 14]
    assert not np.any(chosen_positive.numpy() & ~positive.numpy())
    assert not np.any(chosen_negative.numpy() & positive.numpy())


def test_detection_targets_and_losses_by_hand():
    gt = _ground_truth([[0.1, 0.1, 0.5, 0.5]], [2])
    proposals = tf.constant([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0, 0, 0, 0]]])
    classes, positive, real, codes = losses.detection_targets(proposals, tf.constant([3]), gt)
    assert classes.numpy()[0].tolist() == [2, 2, 0, 0] and real.numpy()[0].tolist() == [True, True, True, False]
    logits = np.zeros((1, 4, 3), np.float32)
    box_codes = np.zeros((1, 4, 2, 4), np.float32)
    box_codes[0, 1, 1] = codes.numpy()[0, 1]  # class 2's codes of proposal 1 are exact: no box loss there
    sampled = tf.constant([[True, True, True, False]])
    out = losses.detection_losses(logits, box_codes, classes, positive, sampled, codes)
    assert float(out["classification"]) == pytest.approx(np.log(3), rel=1e-5)  # uniform logits
    assert float(out["box"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow(seconds=20)
def test_fit_trains_both_stages_on_one_scene_under_mirrored_strategy():
    """``model.fit`` on (images, ground truth) over two replicas (one image each): every
    loss falls (the RPN finds the box, the second stage learns its class)."""
    from mobilenet_tf._keras import keras
    from mobilenet_tf.training import strategy as strategy_lib

    strategy = strategy_lib.get_strategy("mirrored", num_cpu_devices=2)
    keras.utils.set_random_seed(0)
    images = np.zeros((2, 128, 128, 3), np.float32)
    images[:, 32:96, 40:100] = 255.0
    gt = {"boxes": np.array([[[0.25, 0.3125, 0.75, 0.78125], [0, 0, 0, 0]]] * 2, np.float32),
          "classes": np.array([[2, 0]] * 2, np.int32), "valid": np.array([[1, 0]] * 2, np.int32)}
    with strategy.scope():
        model = frcnn.build_faster_rcnn("v1", num_classes=3, alpha=0.25, max_proposals=50)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, gt, epochs=10, batch_size=2, verbose=0).history
    assert strategy.num_replicas_in_sync == 2
    for name in ("loss", "rpn_objectness", "classification"):
        assert history[name][-1] < 0.5 * history[name][0], (name, history[name])
    assert all(np.isfinite(history["box"])) and all(np.isfinite(history["rpn_box"]))


def _one_step_update(policy):
    """The RPN conv kernel's change in one SGD step from seed-0 weights under ``policy``;
    the model's outputs and detections."""
    from mobilenet_tf._keras import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = frcnn.build_faster_rcnn("v1", num_classes=3, alpha=0.25, max_proposals=8, second_stage_stride=2)
        images = tf.random.uniform((2, 128, 128, 3), 0, 255, seed=4)
        out = model(images)
        gt = _ground_truth([[0.2, 0.2, 0.7, 0.7]], [1])
        gt = {key: tf.concat([value, value], axis=0) for key, value in gt.items()}
        optimizer = keras.optimizers.SGD(0.01)
        if policy == "mixed_float16":  # what compile() wraps it in, starting below float16's overflow
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0 ** 8)
        model.compile(optimizer=optimizer)
        kernel = model.first_stage.get_layer("rpn_conv").kernel
        before = kernel.numpy()
        logs = model.train_on_batch(images, gt, return_dict=True)
        return model, out, logs, kernel.numpy() - before
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow(seconds=12)
def test_mixed_precision_computes_float16_and_scales_the_loss():
    """Under ``mixed_float16`` (``--mixed-precision``) the stages compute in float16, the
    outputs, detections and losses are float32, and a training step moves the weights
    as float32's does (the loss is scaled for the LossScaleOptimizer, which unscales the
    gradients; its first steps at the default scale 2^15 overflow and are skipped)."""
    model, out, logs, update = _one_step_update("mixed_float16")
    assert model.first_stage.get_layer("rpn_conv").compute_dtype == "float16"
    assert {out[key].dtype for key in ("rpn_boxes", "rpn_objectness", "classes", "boxes")} == {tf.float32}
    assert frcnn.detect(out)["boxes"].dtype == tf.float32
    assert all(np.isfinite(value) for value in logs.values()), logs
    _, _, _, reference = _one_step_update("float32")
    ratio = np.linalg.norm(update) / np.linalg.norm(reference)
    assert 0.5 < ratio < 2.0, ratio  # an unscaled loss: 1 / 256 (the gradients divided by the scale)
