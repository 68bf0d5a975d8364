"""Faster R-CNN on a MobileNet backbone: the MobileNetV1 paper's Table 13 detector (section
4.6), as the TF Object Detection API builds it (``faster_rcnn_meta_arch.py``,
``faster_rcnn_mobilenet_v1_feature_extractor.py``, the ``faster_rcnn_*`` configs).

    images (B, H, W, 3), pixels in [0, 255]                                   first stage
      -> backbone to its stride-16 map "C4" (V1: Conv2d_11_pointwise, 512 channels)
      -> RPN: 3x3 conv 512 + ReLU6 -> 1x1 objectness (A x 2) | 1x1 box codes (A x 4)
      -> decode against the grid anchors, clip to the image, NMS at IoU 0.7
         -> ``max_proposals`` (300) proposals per image
      -> ``tf.image.crop_and_resize`` of C4 to 14x14, 2x2 max pool -> (B * 300, 7, 7, C4)
      -> the backbone's layers after C4 (V1: Conv2d_12, Conv2d_13)            second stage
      -> average pool -> dense class logits (num_classes, background column 0)
                       | dense per-class box codes ((num_classes - 1) x 4)

Second-stage stride: the reference extractor keeps Conv2d_12's stride 2 (7x7 crops ->
4x4); Table 13's MAdds (25.2B at 300, 30.5B at 600) are those of a second stage at
7x7 on 300 proposals, so the default here is ``second_stage_stride=1`` (the layers
after C4 dilated instead of strided, ``output_stride=16``; the same weights), and
``second_stage_stride=2`` is the reference code's.

Box codes use SSDLite's center-size coder (10, 10, 5, 5) for both stages, as the
reference does. ``FasterRCNN.train_step`` trains both stages
end to end with ``model.fit`` (targets, sampling and losses in ``losses``); ``detect``
turns the outputs into detections (per-class NMS at IoU 0.6, softmax scores).
"""

import tensorflow as tf

import mobilenet_tf
from mobilenet_tf import export
from mobilenet_tf._keras import keras, layers
from mobilenet_tf.heads.faster_rcnn import anchors as anchors_lib, losses as losses_lib
from mobilenet_tf.heads.ssdlite import box_coder

FEATURE_ENDPOINT, LAST_ENDPOINT = "C4", "C5"  # the stride-16 tap; the end of the second stage
RPN_DEPTH = 512  # first_stage_box_predictor_depth (3x3, ReLU6, no batch norm)
MAX_PROPOSALS = 300  # first_stage_max_proposals (the paper's 300 proposals per image)
RPN_IOU_THRESHOLD = 0.7  # first_stage_nms_iou_threshold
CROP_SIZE = 14  # initial_crop_size, then maxpool_kernel_size 2, maxpool_stride 2
DETECTION_IOU_THRESHOLD = 0.6  # second_stage_post_processing.batch_non_max_suppression
MAX_DETECTIONS = 100  # per image, for COCO evaluation (the config keeps 300)
LOSS_NAMES = ("loss", "rpn_objectness", "rpn_box", "classification", "box")


def build_faster_rcnn(backbone="v1", num_classes=91, alpha=None, reduced_tail=None, max_proposals=MAX_PROPOSALS,
                      second_stage_stride=1, anchor_spec=anchors_lib.GridAnchorSpec(), input_shape=(None, None, 3),
                      include_preprocessing=True, backbone_weights=None, name=None):
    """Faster R-CNN on a registry backbone with a stride-16 map "C4" and layers after it.

    Args:
        backbone: a registry name (V1, the paper's; V2, V3, ... take their C4 and
            the layers after it as the second stage).
        num_classes: class logits including the background column 0 (91 for COCO).
        alpha, reduced_tail: the backbone's options (families that take them).
        max_proposals: proposals per image kept after the RPN's NMS (the paper: 300).
        second_stage_stride: 1 (the paper's MAdds: layers after C4 dilated, 7x7 in
            the second stage) or 2 (the reference code: 4x4).
        input_shape: (H, W, 3); None sides take any size (padded batches).

    Returns:
        ``FasterRCNN``: images (B, H, W, 3) -> dict of ``rpn_boxes`` (B, A, 4),
        ``rpn_objectness`` (B, A, 2), ``proposals`` (B, P, 4) normalised,
        ``num_proposals`` (B,), ``classes`` (B, P, num_classes) logits and
        ``boxes`` (B, P, num_classes - 1, 4) codes relative to the proposals.
    """
    mobilenet_tf.registry.get_entry(backbone)  # unknown name -> ValueError, first
    if num_classes < 2:
        raise ValueError(f"`num_classes` counts the background column and must be >= 2; got {num_classes}.")
    if not isinstance(max_proposals, int) or max_proposals < 1:
        raise ValueError(f"`max_proposals` must be an integer >= 1 (the paper: 300); got {max_proposals!r}.")
    if second_stage_stride not in (1, 2):
        raise ValueError(f"`second_stage_stride` must be 1 or 2; got {second_stage_stride!r}.")
    features, info = mobilenet_tf.registry.build_features(
        backbone, alpha=alpha, reduced_tail=reduced_tail, input_shape=input_shape,
        output_stride=16 if second_stage_stride == 1 else 32, include_preprocessing=include_preprocessing,
        weights=backbone_weights)
    tap = check_backbone(backbone, info)
    c4 = features.output[FEATURE_ENDPOINT]
    boxes_per_location = anchor_spec.boxes_per_location
    x = layers.Conv2D(RPN_DEPTH, 3, padding="same", activation="relu6", name="rpn_conv")(c4)
    objectness = layers.Conv2D(boxes_per_location * 2, 1, name="rpn_objectness_conv")(x)
    rpn_boxes = layers.Conv2D(boxes_per_location * 4, 1, name="rpn_box_conv")(x)
    first_stage = keras.Model(features.input, {
        "features": c4,
        "rpn_objectness": layers.Reshape((-1, 2), name="rpn_objectness", dtype="float32")(objectness),
        "rpn_boxes": layers.Reshape((-1, 4), name="rpn_boxes", dtype="float32")(rpn_boxes),
    }, name="first_stage")

    # The second stage: the backbone's own layers from C4 to C5 (same weights), on the crops.
    # (Its layers re-applied to the crops: no nested model, the same weights.)
    tail = keras.Model(c4, features.output[LAST_ENDPOINT], name="box_classifier_features")
    crops = keras.Input((CROP_SIZE // 2, CROP_SIZE // 2, tap.channels), name="crops")
    tail = keras.models.clone_model(tail, input_tensors=crops, clone_function=lambda layer: layer)
    pooled = layers.GlobalAveragePooling2D(name="box_classifier_pool")(tail.output)
    second_stage = keras.Model(crops, {
        "classes": layers.Dense(num_classes, name="class_predictor", dtype="float32")(pooled),
        "boxes": layers.Dense((num_classes - 1) * 4, name="box_predictor", dtype="float32")(pooled),
    }, name="second_stage")
    return FasterRCNN(first_stage, second_stage, num_classes, max_proposals, anchor_spec,
                      name=name or f"faster_rcnn_{backbone}")


def check_backbone(backbone, info):
    """The stride-16 tap's ``FeatureInfo`` of ``info`` ({endpoint: FeatureInfo}, the
    backbone's features); ``ValueError`` unless it has a stride-16 "C4" and layers
    after it (a "C5")."""
    tap = info.get(FEATURE_ENDPOINT)
    if tap is None or tap.stride != 16 or LAST_ENDPOINT not in info:
        strides = ", ".join(f"{key} (stride {feature.stride})" for key, feature in info.items())
        raise ValueError(f"Faster R-CNN needs a stride-16 map {FEATURE_ENDPOINT!r} and layers after it; "
                         f"{backbone!r} has {strides}. Use v1 (the paper's), v2, v3_large or v3_small.")
    return tap


def propose(rpn_boxes, rpn_objectness, anchors, max_proposals, iou_threshold=RPN_IOU_THRESHOLD):
    """(B, A, 4) codes and (B, A, 2) logits over (A, 4) anchors -> ``(proposals (B, P, 4),
    num_proposals (B,))``: decoded, clipped to the image, the best after NMS (softmax
    objectness), padded with zeros."""
    boxes = tf.clip_by_value(box_coder.decode(rpn_boxes, anchors[None]), 0.0, 1.0)
    scores = tf.nn.softmax(tf.cast(rpn_objectness, tf.float32))[..., 1]
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[..., None], max_output_size_per_class=max_proposals,
        max_total_size=max_proposals, iou_threshold=iou_threshold, score_threshold=0.0, clip_boxes=False)
    return tf.stop_gradient(nms.nmsed_boxes), nms.valid_detections


def crop_regions(features, proposals):
    """(B, h, w, C) features, (B, P, 4) boxes -> (B * P, 7, 7, C): ``crop_and_resize`` to
    14x14, then 2x2 max pool with stride 2."""
    batch, count = tf.shape(proposals)[0], tf.shape(proposals)[1]
    indices = tf.repeat(tf.range(batch), count)
    crops = tf.image.crop_and_resize(features, tf.reshape(proposals, (-1, 4)), indices, (CROP_SIZE, CROP_SIZE))
    return tf.nn.max_pool2d(crops, 2, 2, "VALID")


@keras.saving.register_keras_serializable(package="mobilenet_tf")
class FasterRCNN(keras.Model):
    """The two stages and what runs between them (see the module docstring)."""

    def __init__(self, first_stage, second_stage, num_classes, max_proposals=MAX_PROPOSALS,
                 anchor_spec=anchors_lib.GridAnchorSpec(), **kwargs):
        super().__init__(**kwargs)
        self.first_stage, self.second_stage = first_stage, second_stage
        self.num_classes, self.max_proposals, self.anchor_spec = num_classes, max_proposals, anchor_spec

        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}
        self.built = True  # both stages are built models: weights load (resume, --weights) before a first call

    @property
    def metrics(self):
        return list(self.trackers.values())

    def anchors(self, images, features):
        """The (A, 4) anchors of ``features`` over ``images`` (normalised, unclipped)."""
        return anchors_lib.grid_anchors(tf.shape(features)[1:3], tf.shape(images)[1:3], self.anchor_spec)

    def _proposals(self, anchors, first):
        """Proposals from the anchors clipped to the image (as the reference at inference)."""
        return propose(first["rpn_boxes"], first["rpn_objectness"], tf.clip_by_value(anchors, 0.0, 1.0),
                       self.max_proposals)

    def call(self, images, training=False):
        first = self.first_stage(images, training=training)
        proposals, num_proposals = self._proposals(self.anchors(images, first["features"]), first)
        second = self.second_stage(crop_regions(first["features"], proposals), training=training)
        batch, count = tf.shape(proposals)[0], tf.shape(proposals)[1]
        return {
            "rpn_boxes": first["rpn_boxes"], "rpn_objectness": first["rpn_objectness"],
            "proposals": proposals, "num_proposals": num_proposals,
            "classes": tf.reshape(second["classes"], (batch, count, self.num_classes)),
            "boxes": tf.reshape(second["boxes"], (batch, count, self.num_classes - 1, 4)),
        }

    def compute_training_losses(self, images, gt, training=True):
        """{name: scalar} for a batch of images and their ground truth (``losses``' format):
        the RPN's on sampled anchors inside the image, the second stage's on the sampled
        proposals, which are cropped and classified; gradients reach the backbone through
        both stages (not through the proposals' coordinates)."""
        first = self.first_stage(images, training=training)
        anchors = self.anchors(images, first["features"])
        inside = tf.reduce_all((anchors >= 0.0) & (anchors <= 1.0), axis=1)
        losses = losses_lib.rpn_losses(first["rpn_boxes"], first["rpn_objectness"], anchors, inside, gt)
        proposals, num_proposals = self._proposals(anchors, first)
        boxes, classes, positive, sampled, codes = losses_lib.sample_proposals(proposals, num_proposals, gt)
        second = self.second_stage(crop_regions(first["features"], boxes), training=training)
        batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
        losses.update(losses_lib.detection_losses(
            tf.reshape(second["classes"], (batch, count, self.num_classes)),
            tf.reshape(second["boxes"], (batch, count, self.num_classes - 1, 4)), classes, positive, sampled, codes))
        return losses

    def _track(self, losses, total):
        self.trackers["loss"].update_state(total)
        for name, value in losses.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        """One ``fit`` step on ``(images, {"boxes", "classes", "valid"})``."""
        images, gt = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # gradients are summed over them
        with tf.GradientTape() as tape:
            losses = self.compute_training_losses(images, gt, training=True)
            total = tf.add_n(list(losses.values()) + list(self.losses))
            # (Mixed precision: ``compile`` wrapped the optimizer in a LossScaleOptimizer,
            # whose ``apply`` unscales the gradients of this scaled loss.)
            scaled = self.optimizer.scale_loss(total / replicas)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._track(losses, total)

    def test_step(self, data):
        losses = self.compute_training_losses(data[0], data[1], training=False)
        return self._track(losses, tf.add_n(list(losses.values())))


def detect(outputs, score_threshold=1e-8, max_detections=MAX_DETECTIONS, iou_threshold=DETECTION_IOU_THRESHOLD):
    """``FasterRCNN`` outputs -> {"boxes" (B, K, 4) normalised, "scores" (B, K), "classes"
    (B, K) ids >= 1, "num_detections" (B,)}: per-class boxes decoded against their
    proposals, softmax scores (padding proposals score 0), per-class NMS."""
    proposals = outputs["proposals"]
    boxes = tf.clip_by_value(box_coder.decode(outputs["boxes"], proposals[:, :, None, :]), 0.0, 1.0)
    scores = tf.nn.softmax(tf.cast(outputs["classes"], tf.float32))[..., 1:]
    real = tf.range(tf.shape(proposals)[1])[None] < outputs["num_proposals"][:, None]
    scores = tf.where(real[..., None], scores, 0.0)
    nms = tf.image.combined_non_max_suppression(
        boxes, scores, max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores, "classes": tf.cast(nms.nmsed_classes, tf.int32) + 1,
            "num_detections": nms.valid_detections}


def save_detector(model, path, score_threshold=1e-8):
    """A SavedModel of the whole detector: ``serving_default`` takes "images" (B, H, W, 3)
    float32 pixels in [0, 255] of any size and returns ``detect``'s boxes, scores,
    classes and num_detections. Returns ``path``."""
    spec = tf.TensorSpec((None, None, None, 3), tf.float32, name="images")
    return export.save_function(model, lambda images: detect(model(images, training=False), score_threshold),
                                spec, path)


def profile(model, image_size):
    """Parameters and multiply-adds at an (height, width) image: the first stage at that
    size plus the second stage on ``model.max_proposals`` crops (NMS, cropping and
    pooling count nothing; parameters are conv / dense, as the papers count).

    Returns:
        dict with ``params``, ``madds``, ``first_stage_madds``, ``second_stage_madds``.
    """
    first = mobilenet_tf.profile(model.first_stage, input_shape=(*image_size, 3))
    # (Counted on a copy at the crop size: the second stage's layers are the backbone's,
    # whose first call was on the whole image.)
    second = mobilenet_tf.profile(model.second_stage, input_shape=tuple(model.second_stage.input_shape[1:]))
    second_madds = second.madds * model.max_proposals
    return {"params": first.conv_dense_params + second.conv_dense_params, "madds": first.madds + second_madds,
            "first_stage_madds": first.madds, "second_stage_madds": second_madds}
