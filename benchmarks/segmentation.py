"""The V3 paper's segmentation comparison (Table 7, rows 1-8) on this machine: MAdds and
TFLite fp32 latency of the eight heads and backbones side by side in one run.

    python benchmarks/segmentation.py                                # 1024x2048 and 512x1024, 2 threads
    python benchmarks/segmentation.py --sizes 512x1024 --repeats 3

Batch 1, 19 classes, output stride 16; V2 rows on its 320-channel map (C5_block), as
the paper counts them. Random weights (BatchNormalization statistics from two random
images); TFLite with ``--threads`` threads and XNNPACK, the eight files of one size
timed in alternating rounds (``benchmark.median_seconds``), so their ratios are fair.
The paper's claim: row 8 (V3, RF2, LR-ASPP 128) is 34% faster than row 1 (V2, R-ASPP
256) on a Pixel 3 (its CPU(f) column: 2.47 s vs 3.90 s at 1024x2048, one core).
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mobilenet_tf  # noqa: E402
from mobilenet_tf import benchmark, export  # noqa: E402
from mobilenet_tf.heads import segmentation  # noqa: E402
from mobilenet_tf.heads.segmentation import paper  # noqa: E402

PAPER_CPU_F_SECONDS = (3.90, 3.03, 2.98, 2.89, 3.55, 2.60, 2.55, 2.47)  # V3 Table 7, Pixel 3, 1024x2048


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024x2048,512x1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = paper.V3_TABLE_7[:8]
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, TFLite fp32, {args.threads} threads, batch 1\n")
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        print(f"{height}x{width}:\n")
        print("| row | model | MAdds | paper MAdds | TFLite ms | vs row 1 | paper vs row 1 | XNNPACK partitions |")
        print("|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            interpreters, madds = [], []
            for index, row in enumerate(rows):
                model = segmentation.build_segmentation(num_classes=19, input_shape=(height, width, 3), **row.options)
                benchmark.batchnorm_from_data(model, rng.uniform(0, 255, (2, height, width, 3)).astype("float32"))
                madds.append(mobilenet_tf.profile(model).madds)
                path = export.to_tflite(model, os.path.join(tmp, f"row{index + 1}.tflite"), "fp32")
                interpreters.append(export.TFLiteModel(path, args.threads))
            x = rng.uniform(0, 255, (1, height, width, 3)).astype("float32")
            seconds = benchmark.median_seconds(interpreters, x, args.repeats, warmup=1)
            scale = height * width / (1024 * 2048)
            for index, row in enumerate(rows):
                label = row.label.split(": ", 1)[1]
                print(f"| {index + 1} | {label} | {madds[index] / 1e9:.2f}B | {row.madds * scale / 1e9:.2f}B "
                      f"| {seconds[index] * 1e3:.0f} | {seconds[index] / seconds[0]:.2f} "
                      f"| {PAPER_CPU_F_SECONDS[index] / PAPER_CPU_F_SECONDS[0]:.2f} "
                      f"| {interpreters[index].op_counts().get('DELEGATE', 0)} |", flush=True)
        faster = 1 - seconds[7] / seconds[0]
        print(f"\nrow 8 (V3 LR-ASPP 128) vs row 1 (V2 R-ASPP 256): {faster:.0%} faster "
              f"({seconds[7] * 1e3:.0f} vs {seconds[0] * 1e3:.0f} ms; the paper: 37% on its CPU(f) column, "
              "34% in its text)\n", flush=True)


if __name__ == "__main__":
    main()
