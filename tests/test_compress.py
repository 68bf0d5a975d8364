"""Pruning, clustering and quantization-aware training of a MobileNetV3 with TFMOT
(tf_keras, in a subprocess), then int8 TFLite: issue 8's compression core."""

import textwrap

import pytest

import mobilenet_tf
from conftest import run_legacy_keras
from mobilenet_tf import compress

SCRIPT = textwrap.dedent("""
    import json, os, tempfile
    import numpy as np
    import tf_keras
    import mobilenet_tf
    from mobilenet_tf import compress, export
    from mobilenet_tf.data import classification
    from mobilenet_tf.training import schedules

    size, classes = 48, 10
    train = classification.make_pipeline(classification.synthetic_split(True, 1280, size, classes), training=True,
                                         batch_size=32, image_size=size)
    val = classification.make_pipeline(classification.synthetic_split(False, 200, size, classes), training=False,
                                       batch_size=200, image_size=size)
    images, labels = next(iter(val))
    images, labels = images.numpy(), labels.numpy()

    def accuracy(model):
        return float(np.mean(model.predict(images, verbose=0).argmax(-1) == labels))

    def fit(model, lr, steps, callbacks=()):
        model.compile(tf_keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
        model.fit(train, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0)

    out = {}
    model = mobilenet_tf.build("v3_small", alpha=0.5, input_shape=(size, size, 3), classes=classes)
    schedules.configure_batchnorm(model, momentum=0.9)
    fit(model, 2e-3, 120)
    out["float"] = accuracy(model)

    pruned = compress.prune(model, 0.5, end_step=30, frequency=10)
    fit(pruned, 5e-4, 40, compress.pruning_callbacks())
    pruned = compress.strip(pruned)
    out["pruned"], out["sparsity"] = accuracy(pruned), compress.sparsity(pruned)

    clustered = compress.cluster(pruned, 16, preserve_sparsity=True)
    fit(clustered, 2e-4, 20)
    clustered = compress.strip(clustered)
    out["clustered"], out["unique"] = accuracy(clustered), compress.unique_values(clustered)
    out["clustered_sparsity"] = compress.sparsity(clustered)

    qat = compress.quantize_aware(clustered, "cluster_preserve")
    fit(qat, 1e-4, 20)
    out["qat"] = accuracy(qat)
    out["qat_layers"] = sorted({type(layer).__name__ for layer in qat.layers})
    path = export.to_tflite(qat, os.path.join(tempfile.mkdtemp(), "qat.tflite"), "qat")
    tflite = export.TFLiteModel(path)
    predictions = tflite(images)
    out["tflite"] = float(np.mean(predictions.argmax(-1) == labels))
    out["agreement"] = float(np.mean(predictions.argmax(-1) == qat.predict(images, verbose=0).argmax(-1)))
    out["ops"] = tflite.op_counts()
    out["int8_tensors"] = sum(d["dtype"] is np.int8 for d in tflite.interpreter.get_tensor_details())
    print("RESULT" + json.dumps(out))
""")


def test_prune_cluster_qat_int8_on_mobilenet_v3():
    r = run_legacy_keras(SCRIPT, timeout=900)
    assert r["float"] >= 0.5, r
    # Pruning: every Conv2D / Dense kernel at the target sparsity (TFMOT rounds per tensor).
    assert r["sparsity"] and all(abs(s - 0.5) < 0.02 for s in r["sparsity"].values()), r["sparsity"]
    # Clustering: at most 16 shared values (+ the preserved zero) per kernel, zeros kept.
    assert max(r["unique"].values()) <= 17 and all(s >= 0.48 for s in r["clustered_sparsity"].values())
    # QAT wrapped h-swish's Rescaling / Multiply and SE gates (tfmot rejects them unannotated).
    assert "QuantizeWrapperV2" in r["qat_layers"] and "Rescaling" not in r["qat_layers"]
    # int8 TFLite: int8 kernels, agrees with the QAT Keras model, accuracy kept.
    assert r["ops"].get("CONV_2D", 0) > 0 and r["int8_tensors"] > 50
    assert r["agreement"] >= 0.9, r
    assert r["tflite"] >= r["float"] - 0.1, r


def test_compress_refuses_keras_3_and_bad_arguments():
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(32, 32, 3), classes=4)
    with pytest.raises(compress.LegacyKerasRequired, match="TF_USE_LEGACY_KERAS=1"):
        compress.prune(model, 0.5, end_step=10)
    with pytest.raises(ValueError, match=r"`target_sparsity` must be in \(0, 1\); got 1.5"):
        compress.prune(model, 1.5, end_step=10)
    with pytest.raises(ValueError, match="`clusters` must be an integer >= 2; got 1"):
        compress.cluster(model, 1)
    with pytest.raises(ValueError, match="`init` must be one of"):
        compress.cluster(model, 8, init="best")
    with pytest.raises(ValueError, match="`scheme` must be one of"):
        compress.quantize_aware(model, "int4")
