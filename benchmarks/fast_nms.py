"""Fast (class-agnostic) vs regular (per-class) NMS in the TFLite detector: COCO AP on
the recipe's synthetic evaluation scenes and latency, side by side in one run.

    python recipes/ssdlite_coco.py --output-dir runs/ssd      # a trained detector (model.keras)
    python benchmarks/fast_nms.py runs/ssd                    # its 200 evaluation scenes, 160 px
    python benchmarks/fast_nms.py --latency-only              # SSDLite V3-Large 320, 91 classes, random weights

Both files score every anchor (threshold 1e-8, as COCO evaluation needs) and keep 100
detections. The latency rows time the two fp32 files at batch 1 in alternating rounds
(the network included); on a 5-class synthetic detector NMS is cheap either way, so
``--latency-only`` (and the default second part) times a 91-class SSDLite V3-Large
at 320 with random weights and BN statistics from random images, COCO's worst case.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from mobilenet_tf import benchmark  # noqa: E402
from mobilenet_tf._keras import keras  # noqa: E402
from mobilenet_tf.heads import ssdlite  # noqa: E402
from mobilenet_tf.heads.ssdlite import data, deploy, evaluation  # noqa: E402

NMS_KINDS = ("regular", "fast")


def tflite_batches(path):
    """``make_detector`` for ``COCOEvaluator``: the batch-1 TFLite file over a batch."""
    detector = deploy.TFLiteDetector(path, threads=2)

    def detect(images):
        outs = [detector(image[None]) for image in np.asarray(images)]
        return {key: np.concatenate([out[key] for out in outs]) for key in outs[0]}
    return lambda model: detect


def coco_ap(run_dir, tmp):
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    size = model.input_shape[1]
    classes = model.output["classes"].shape[-1]
    split = data.synthetic_split(False, 200, size, classes)
    eval_ds = data.make_eval_pipeline(split, input_size=size, batch_size=8)
    print(f"COCO AP of {run_dir}/model.keras on 200 synthetic evaluation scenes ({size} px), score >= 1e-8:\n")
    print("| NMS | AP | AP50 | AP75 | detections |")
    print("|---|---|---|---|---|")
    for nms in ("keras", *NMS_KINDS):
        if nms == "keras":
            evaluator = evaluation.COCOEvaluator(split, eval_ds)
        else:
            path = deploy.to_tflite_detector(model, os.path.join(tmp, f"{nms}.tflite"), nms=nms)
            evaluator = evaluation.COCOEvaluator(split, eval_ds, make_detector=tflite_batches(path))
        scores = evaluator(model)
        label = "Keras (per class)" if nms == "keras" else f"TFLite {nms}"
        print(f"| {label} | {scores['map']:.4f} | {scores['map50']:.4f} | {scores['map75']:.4f} "
              f"| {len(evaluator.last[1])} |", flush=True)


def latency(tmp, repeats):
    model = ssdlite.build_ssdlite("v3_large", num_classes=91, input_size=320)
    benchmark.batchnorm_from_data(model, np.random.default_rng(1).uniform(0, 255, (4, 320, 320, 3)).astype("float32"))
    files = [deploy.TFLiteDetector(deploy.to_tflite_detector(model, os.path.join(tmp, f"lat_{nms}.tflite"), nms=nms),
                                   threads=2) for nms in NMS_KINDS]
    image = np.random.default_rng(0).uniform(0, 255, (1, 320, 320, 3)).astype("float32")
    seconds = benchmark.median_seconds(files, image, repeats)
    print("\nSSDLite V3-Large 320, 91 classes, score >= 1e-8, TFLite fp32, 2 threads, median of "
          f"{repeats}:\n\n| NMS | ms |\n|---|---|")
    for nms, s in zip(NMS_KINDS, seconds):
        print(f"| {nms} | {s * 1e3:.1f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a recipes/ssdlite_coco.py run directory (model.keras)")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.latency_only:
            if not args.run_dir:
                parser.error("give a run directory, or --latency-only")
            coco_ap(args.run_dir, tmp)
        latency(tmp, args.repeats)


if __name__ == "__main__":
    main()
