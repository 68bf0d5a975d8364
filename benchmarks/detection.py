"""Detectors' end-to-end latency, side by side in one run: SSDLite, SSD 300 and
Faster R-CNN (the V1 paper's Table 13 trade-off), Keras vs TFLite where it converts.

    python benchmarks/detection.py        # SSDLite-320 V3-L / V3-S, SSD-300 V1, Faster R-CNN 300 / 600 V1
    python benchmarks/detection.py --models ssdlite:v2:320,ssd:v1:300,frcnn:v1:600 --threads 4 --repeats 20

Batch 1, end to end: a 480x640 uint8 camera frame is resized to the model's input
(the same ``tf.image.resize`` for both), then the network, decoding and NMS. Keras runs all of
it as one ``tf.function`` (``combined_non_max_suppression``); TFLite runs the
detector file of ``deploy.to_tflite_detector`` (the ``TFLite_Detection_PostProcess``
op) with ``--threads`` threads and XNNPACK, once with per-class ("regular") NMS, as
Keras and COCO evaluation do, once with fast class-agnostic NMS, the deployment
default. All three are timed in alternating rounds.
Faster R-CNN resizes the frame keeping its aspect ratio (short side 300 or 600:
300x400, 600x800; its MAdds are counted at that size, 300 proposals) and runs in
Keras only: its TFLite file needs Select TF ops (``CombinedNonMaxSuppression``,
``CropAndResize``), which the pip interpreters cannot run.

Weights are random (BatchNormalization statistics from four random images,
``benchmark.batchnorm_from_data``, so int8 gets a trained model's activation
scales), and the score threshold decides how much work NMS gets: 1e-8 (COCO
evaluation: every anchor's scores pass, the worst case) and 0.3 (display: with the
-4.6 class prior few random scores pass, so NMS is nearly free). SSD 300 has no class
prior in its config; its random class biases are set to the same -4.6 here so that
0.3 means the same light NMS load as a trained detector's. int8 is timed at 0.3
after them. (Faster R-CNN's softmax scores over 91 classes of a random model are
about 1/91 each: at 0.3 its second NMS gets almost nothing, as a trained model's
background-heavy scores would give it.)
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark  # noqa: E402
from mobilenet_tf.heads import ssdlite  # noqa: E402
from mobilenet_tf.heads import faster_rcnn  # noqa: E402
from mobilenet_tf.heads.faster_rcnn import data as frcnn_data  # noqa: E402
from mobilenet_tf.heads.ssdlite import deploy, postprocess  # noqa: E402

FRAME = (480, 640)


def keras_pipeline(model, size, threshold):
    detector = postprocess.build_inference_model(model, score_threshold=threshold)

    @tf.function
    def detect(frame):
        return detector(tf.image.resize(tf.cast(frame, tf.float32)[None], (size, size)))["num_detections"]

    return lambda frame: detect(frame).numpy()


def faster_rcnn_pipeline(model, size, threshold):
    @tf.function
    def detect(frame):
        image = frcnn_data.resize_keep_aspect(frame, size)[None]
        return faster_rcnn.detect(model(image, training=False), score_threshold=threshold)["num_detections"]

    return lambda frame: detect(frame).numpy()


def faster_rcnn_row(backbone, size, num_classes, frame, repeats):
    """Faster R-CNN's rows (Keras only; see the module docstring)."""
    model = faster_rcnn.build_faster_rcnn(backbone, num_classes=num_classes)
    shape = tuple(int(v) for v in frcnn_data.resized_shape(*FRAME, size))
    benchmark.batchnorm_from_data(model.first_stage,
                                  np.random.default_rng(1).uniform(0, 255, (4, *shape, 3)).astype("float32"))
    profile = faster_rcnn.model.profile(model, shape)
    for threshold in (1e-8, 0.3):
        (keras_s,) = benchmark.median_seconds([faster_rcnn_pipeline(model, size, threshold)], frame, repeats)
        print(f"| Faster R-CNN | {backbone} | {shape[0]}x{shape[1]} | {model.count_params() / 1e6:.2f}M "
              f"| {profile['madds'] / 1e9:.3f}B | {threshold:g} | {keras_s * 1e3:.1f} | - | - | - | - |", flush=True)


def tflite_pipeline(path, size, threads):
    detector = deploy.TFLiteDetector(path, threads=threads)
    resize = tf.function(lambda frame: tf.image.resize(tf.cast(frame, tf.float32)[None], (size, size)))
    return lambda frame: detector(resize(frame).numpy())["num_detections"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ssdlite:v3_large:320,ssdlite:v3_small:320,ssd:v1:300,frcnn:v1:300,"
                                            "frcnn:v1:600",
                        help="comma list of head:backbone:input size (head: ssdlite, ssd or frcnn)")
    parser.add_argument("--num-classes", type=int, default=91)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 conversion and timing")
    args = parser.parse_args(argv)

    frame = np.random.default_rng(0).integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, TFLite threads {args.threads}, batch 1, "
          f"{FRAME[0]}x{FRAME[1]} frame, {args.num_classes} classes\n")
    print("| detector | backbone | input | params | MAdds | score threshold | Keras ms | TFLite fp32 ms "
          "| Keras / TFLite | TFLite fp32 fast NMS ms | TFLite int8 ms (fast NMS) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            head, backbone, size = spec.split(":")
            size = int(size)
            if head == "frcnn":
                faster_rcnn_row(backbone, size, args.num_classes, frame, args.repeats)
                continue
            model = ssdlite.model.build_detector(head, backbone, args.num_classes, size)
            benchmark.batchnorm_from_data(
                model, np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32"))
            for layer in model.layers:  # the class prior (SSD's config has none; see above)
                if layer.name.startswith("class_predictor") and layer.name.endswith("_conv"):
                    layer.bias.assign(np.full(layer.bias.shape, ssdlite.model.CLASS_BIAS_INIT, "float32"))
            profile = mobilenet_tf.profile(model)
            for threshold in (1e-8, 0.3):
                path, fast_path = (
                    deploy.to_tflite_detector(model, os.path.join(tmp, f"{head}_{backbone}_{nms}.tflite"),
                                              score_threshold=threshold, nms=nms)
                    for nms in ("regular", "fast"))
                keras_s, tflite_s, fast_s = benchmark.median_seconds(
                    [keras_pipeline(model, size, threshold), tflite_pipeline(path, size, args.threads),
                     tflite_pipeline(fast_path, size, args.threads)], frame, args.repeats)
                int8_ms = "-"
                if threshold == 0.3 and not args.no_int8:
                    calibration = [np.random.default_rng(i).uniform(0, 255, (1, size, size, 3)).astype("float32")
                                   for i in range(4)]
                    int8_path = deploy.to_tflite_detector(model, os.path.join(tmp, f"{head}_{backbone}_int8.tflite"),
                                                          "int8", calibration, score_threshold=threshold, nms="fast")
                    (int8_s,) = benchmark.median_seconds([tflite_pipeline(int8_path, size, args.threads)], frame,
                                                         args.repeats)
                    int8_ms = f"{int8_s * 1e3:.1f}"
                name = "SSDLite" if head == "ssdlite" else "SSD"
                print(f"| {name} | {backbone} | {size} | {profile.params / 1e6:.2f}M | {profile.madds / 1e9:.3f}B "
                      f"| {threshold:g} "
                      f"| {keras_s * 1e3:.1f} | {tflite_s * 1e3:.1f} | {keras_s / tflite_s:.2f} | {fast_s * 1e3:.1f} "
                      f"| {int8_ms} |",
                      flush=True)


if __name__ == "__main__":
    main()
