"""Compress a MobileNet the Deep Compression way: prune -> cluster -> QAT -> int8 TFLite.

    python recipes/compress.py                       # synthetic data, CPU, minutes: train, then compress
    python recipes/compress.py --weights run/weights.npz --model v3_small --alpha 0.75 --input-size 224 \\
        --classes 1000 --dataset imagenet2012 --data-dir ~/tensorflow_datasets --prune 0.75 --clusters 16
    python recipes/compress.py --prune 0 --clusters 0 --no-qat   # post-training int8 only

Runs under tf_keras (tensorflow-model-optimization 0.8 needs it): this script sets
``TF_USE_LEGACY_KERAS=1`` itself before TensorFlow is imported. A model trained
with Keras 3 comes in as ``--weights`` saved by ``mobilenet_tf.weights.save_by_name``
(or use ``mobilenet-tf compress run/model.keras``, which does that for you). The
stages and the report are ``mobilenet_tf.deep_compression``; the run directory gets
config.json, metrics.json, report.md (the tables), size_accuracy.png, the stages'
.tflite files, compressed.npz and compressed.dc (the weights in Deep Compression's
format: ``mobilenet_tf.compressed_format.decode`` reads it back).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: TFMOT works on tf_keras only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobilenet_tf import deep_compression  # noqa: E402
from mobilenet_tf.training import recipe  # noqa: E402

# The skeleton's entry points over deep_compression's Config / resolve / main (its
# stages are not a train-then-export run, so it is not a Recipe subclass).
Config, resolve, main, get_args_parser, cli = recipe.script(deep_compression)

if __name__ == "__main__":
    cli()
