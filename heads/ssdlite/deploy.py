"""Deployable detectors: a SavedModel and a TFLite file with decoding and NMS inside.

    (1, S, S, 3) float32 pixels in [0, 255] -> network -> [sigmoid, decode, clip]
        -> TFLite_Detection_PostProcess (fast or per-class NMS) -> boxes (1, K, 4),
           scores (1, K), classes (1, K) ids >= 1, num_detections (1,)

NMS (``nms``): "fast", the TF Object Detection API's TFLite default
(``use_regular_nms=false``): each anchor keeps its best class only and one class-
agnostic NMS runs over all of them, so its cost does not grow with the classes;
"regular": NMS per class, as ``postprocess.build_inference_model`` and COCO
evaluation do (an anchor may be kept for several classes).

``combined_non_max_suppression`` is not a TFLite builtin (through Flex it converts,
but the pip interpreter, like a phone without the select-ops library, cannot run
it), so the TFLite file uses the custom op ``TFLite_Detection_PostProcess``, which
every TFLite runtime registers. As in the TF Object Detection API
(``export_tflite_graph_lib_tf2``), the graph calls an empty ``tf.function`` whose
``experimental_implements`` names the op and its attributes; the converter swaps
the call for the op. It needs the SavedModel path (``export.save_function``):
``from_concrete_functions`` inlines the empty body.

What the op imposes, and how it is met here:
- batch size 1 only: the TFLite input is (1, S, S, 3);
- it decodes but never clips, while ``postprocess`` clips to [0, 1] before NMS: the
  graph decodes and clips itself and hands the op codes that decode back to exactly
  those boxes (unit anchors, unit scales: ``_unit_codes``);
- scores go in already converted (sigmoid / softmax), with the background column;
  its class ids come out 0-based without background: we add 1;
- regular (per-class) NMS run with 1 < T < classes threads never processes class
  column T (tensorflow/tensorflow#56058, unfixed in TF 2.21: with 2 threads class 3
  vanished): zero-score dummy columns fill the op's columns 2..8 and are mapped away,
  so any interpreter of up to ``THREAD_SAFE_UP_TO`` threads is complete;
- slots past num_detections are left uninitialised by the op: zeroed.
int8 quantizes the network only; the postprocess (decode, log, sigmoid) stays
float, or scores collapse to 1/256 steps.
"""

import tempfile

import numpy as np
import tensorflow as tf

from mobilenet_tf import export
from mobilenet_tf.heads.ssdlite import box_coder, model as model_lib, postprocess

# The quantizations a detector file takes (names of export.QUANTIZATIONS; None and
# the other aliases of export.ALIASES are accepted as well).
QUANTIZATIONS = ("fp32", "int8")
NMS = ("fast", "regular")
THREAD_SAFE_UP_TO = 8
MIN_SIDE = 1e-8  # boxes clipped to zero size keep this side (finite log)
POSTPROCESS_SCOPE = "postprocess"  # tensors under it stay float in int8 files
# Ops of the postprocess kept float in int8 files (fused tensor names do not always
# keep the scope; the constants of the dummy columns are named "arith.constant").
# The network's only CONCATENATION (the predictors' outputs) stays float with them.
# Also the ops XNNPACK has no int8 kernel for (``export.FLOAT_IN_INT8``: softmax, GELU,
# attention's matmuls, lone ReLUs, ...; MAXIMUM is the postprocess's own too).
FLOAT_ONLY_OPS = [*export.FLOAT_IN_INT8, "LOGISTIC", "UNPACK", "PACK", "LOG", "EXP", "MINIMUM", "MAXIMUM",
                  "STRIDED_SLICE", "CONCATENATION", "SELECT_V2", "SELECT"]


def save_detector(model, path, score_threshold=1e-8, activation="sigmoid"):
    """SavedModel: "images" (B, S, S, 3) float32 in [0, 255] -> boxes, scores, classes,
    num_detections (``postprocess`` with ``combined_non_max_suppression``)."""
    detector = postprocess.build_inference_model(model, score_threshold, activation)
    export.save_function(model, detector._postprocessed,
                         tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images"), path)
    return path


def _implements_signature(num_classes, max_detections, score_threshold, iou_threshold, regular_nms):
    """The op's name and attributes; ``num_classes`` without background. Floats keep
    full precision (``%f`` would turn a 1e-8 threshold into 0)."""
    ints = dict(max_detections=max_detections, max_classes_per_detection=1, detections_per_class=max_detections,
                num_classes=num_classes)
    floats = dict(nms_score_threshold=score_threshold, nms_iou_threshold=iou_threshold, y_scale=1.0, x_scale=1.0,
                  h_scale=1.0, w_scale=1.0)
    attrs = ['name: "TFLite_Detection_PostProcess"',
             f'attr {{ key: "use_regular_nms" value {{ b: {str(regular_nms).lower()} }} }}']
    attrs += [f'attr {{ key: "{key}" value {{ i: {int(value)} }} }}' for key, value in ints.items()]
    attrs += [f'attr {{ key: "{key}" value {{ f: {float(value)!r} }} }}' for key, value in floats.items()]
    return " ".join(attrs)


def _unit_codes(boxes):
    """Corner boxes -> codes that the op decodes back to the same boxes against anchor
    [0, 0, 1, 1] (center-size) with scales 1: [yc, xc, log h, log w]."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    # A box clipped to nothing must not give log(0) = -inf: an infinite value seen in
    # int8 calibration crashes the TF 2.21 converter ("scale out of expressed type
    # range", then a segfault; tensorflow/tensorflow#120295). It hit 1 CI run in 3.
    height, width = tf.maximum(ymax - ymin, MIN_SIDE), tf.maximum(xmax - xmin, MIN_SIDE)
    return tf.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, tf.math.log(height), tf.math.log(width)], axis=-1)


class _TFLiteGraph:
    """The traced graph the converter turns into a detector (before conversion the op's
    stand-in returns zeros: only the .tflite computes detections)."""

    def __init__(self, model, score_threshold, activation, nms):
        if score_threshold <= 0:
            raise ValueError(f"`score_threshold` must be > 0 (the op keeps scores >= it); got {score_threshold}.")
        if nms not in NMS:
            raise ValueError(f"`nms` must be one of {NMS}; got {nms!r}.")
        self.model, self.activation = model, activation
        self.anchors = tf.constant(model_lib.anchors_for(model))
        self.unit_anchors = tf.constant(np.tile(np.float32([[0, 0, 1, 1]]), (self.anchors.shape[0], 1)))
        num_classes = model.output["classes"].shape[-1] - 1  # without background
        # The threading bug is in the per-class path only.
        self.dummy_columns = THREAD_SAFE_UP_TO - 1 if num_classes > 2 and nms == "regular" else 0
        self.max_detections = postprocess.MAX_DETECTIONS
        k = self.max_detections

        @tf.function(experimental_implements=_implements_signature(
            num_classes + self.dummy_columns, k, score_threshold, postprocess.IOU_THRESHOLD, nms == "regular"))
        def detection_postprocess(box_encodings, class_predictions, anchors):
            return (tf.zeros((1, k, 4)), tf.zeros((1, k)), tf.zeros((1, k)), tf.zeros((1,)))

        self.op = detection_postprocess
        self.input_spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="images")

    def __call__(self, images):
        outputs = self.model(images, training=False)
        with tf.name_scope(POSTPROCESS_SCOPE):
            boxes = tf.clip_by_value(box_coder.decode(outputs["boxes"], self.anchors), 0.0, 1.0)
            logits = tf.cast(outputs["classes"], tf.float32)
            scores = tf.sigmoid(logits) if self.activation == "sigmoid" else tf.nn.softmax(logits)
            if self.dummy_columns:  # [background, class 1, class 2, dummies, class 3, ...]
                zeros = [tf.zeros_like(scores[..., :1])] * self.dummy_columns
                scores = tf.concat([scores[..., :3], *zeros, scores[..., 3:]], axis=-1)
            boxes, classes, scores, num = self.op(_unit_codes(boxes), scores, self.unit_anchors)
            if self.dummy_columns:
                classes = tf.where(classes >= 2.0, classes - float(self.dummy_columns), classes)
            valid = tf.range(self.max_detections, dtype=tf.float32)[None] < num[:, None]
            boxes = tf.clip_by_value(boxes, 0.0, 1.0)  # the op's re-decoding is off by float rounding
            return {"boxes": tf.where(valid[..., None], boxes, 0.0), "scores": tf.where(valid, scores, 0.0),
                    "classes": tf.where(valid, classes + 1.0, 0.0), "num_detections": num}


def is_postprocess_tensor(name):
    """Whether a TFLite tensor ``name`` (fused names join parts with ";") was made under
    ``POSTPROCESS_SCOPE``."""
    return any(part.startswith(POSTPROCESS_SCOPE + "/") for part in name.split(";"))


def _postprocess_tensor_names(flatbuffer):
    interpreter = export.bare_interpreter(flatbuffer)
    return sorted({t["name"] for t in interpreter.get_tensor_details() if is_postprocess_tensor(t["name"])})


def to_tflite_detector(model, path, quantization=None, representative_images=None, score_threshold=1e-8,
                       activation="sigmoid", calibration_steps=100, nms="fast"):
    """Write a detection ``.tflite``: "images" (1, S, S, 3) float32 in [0, 255] ->
    boxes (1, 100, 4), scores (1, 100), classes (1, 100) float ids >= 1 (0 = empty
    slot), num_detections (1,).

    Args:
        model: a ``build_ssdlite`` model.
        quantization: one of ``QUANTIZATIONS``: "fp32" (also None) or "int8"
            (full-integer network, float postprocess; needs
            ``representative_images``: (1, S, S, 3) batches).
        nms: "fast" (class-agnostic, one class per anchor: for deployment) or
            "regular" (per class: the Keras detector's and COCO evaluation's).
    """
    quantization = export.quantization_name(quantization, QUANTIZATIONS)
    if quantization == "int8" and representative_images is None:
        raise ValueError("`quantization='int8'` needs `representative_images`.")
    if quantization != "int8":  # float: h-swish as one HARD_SWISH op (see export.fuse_hard_swish)
        model = export.fuse_hard_swish(model)
    else:  # int8: h-swish as x * ReLU6(x + 3), which XNNPACK fuses (see export.fold_hard_swish_scale)
        model = export.fold_hard_swish_scale(model)
    graph = _TFLiteGraph(model, score_threshold, activation, nms)
    calibration = export.calibration_generator(representative_images, calibration_steps)
    with tempfile.TemporaryDirectory() as saved_model:
        export.save_function(model, graph, graph.input_spec, saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantization == "int8":
            # Calibrated by the converter, quantized with the postprocess tensors kept float.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration
            flatbuffer = export.int8_keeping_float(converter, FLOAT_ONLY_OPS, _postprocess_tensor_names)
        else:
            flatbuffer = converter.convert()
    return export.write_file(path, flatbuffer)


class TFLiteDetector:
    """A detection ``.tflite`` as a callable: (1, S, S, 3) -> dict of numpy arrays, classes
    as int32 ids (>= 1), num_detections as (1,) int32; read by output name."""

    def __init__(self, path, threads=2):
        if threads > THREAD_SAFE_UP_TO:
            raise ValueError(f"`threads` must be <= {THREAD_SAFE_UP_TO} (see THREAD_SAFE_UP_TO); got {threads}.")
        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, images):
        out = self.runner(images=np.asarray(images, np.float32))
        return {"boxes": out["boxes"], "scores": out["scores"], "classes": out["classes"].astype(np.int32),
                "num_detections": np.asarray(out["num_detections"]).astype(np.int32).reshape(-1)}

    def op_counts(self):
        counts = {}
        for op in self.interpreter._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts
