"""Pruning, clustering and quantization-aware training with TFMOT (tf_keras, in a
subprocess), then int8 TFLite: `mobilenet-tf compress` on a Keras 3 MobileNetV3, and
the heads."""

import json
import os
import textwrap

import numpy as np
import pytest

import mobilenet_tf
from conftest import run_legacy_keras
from mobilenet_tf import cli, compress, export
from mobilenet_tf._keras import keras
from mobilenet_tf.data import classification
from mobilenet_tf.training import fit, schedules

def _trained_v3(size=48, classes=10, steps=120):
    """A Keras 3 V3-Small 0.5 trained briefly on the synthetic classes; its accuracy on
    the evaluation images the compression pipeline uses."""
    keras.utils.set_random_seed(0)
    model = mobilenet_tf.build("v3_small", alpha=0.5, input_shape=(size, size, 3), classes=classes,
                               include_preprocessing=True)
    schedules.configure_batchnorm(model, momentum=0.9)
    train = classification.make_pipeline(classification.synthetic_split(True, 1280, size, classes), training=True,
                                         batch_size=32, image_size=size, area_range=(0.25, 1.0))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    fit.build_compiled_state(model, train)  # optimizer slots too: one trace of the train function, not two
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    val = classification.make_pipeline(classification.synthetic_split(False, 200, size, classes), training=False,
                                       batch_size=200, image_size=size)
    images, labels = next(iter(val))
    return model, float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels.numpy()))


@pytest.mark.slow(seconds=400)
def test_cli_compresses_a_keras_3_v3_model_with_prune_cluster_qat(tmp_path):
    """`mobilenet-tf compress model.keras --prune --clusters --qat`: V3's h-swish, SE and
    Rescaling through TFMOT under tf_keras in a child process, and back to Keras 3."""
    model, accuracy = _trained_v3()
    model.save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"model": "v3_small", "alpha": 0.5}))  # as recipes write it
    out = tmp_path / "compressed"
    assert cli.main(["compress", str(tmp_path / "model.keras"), "--prune", "0.5", "--clusters", "16", "--qat",
                     "--out", str(out), "--prune-steps", "40", "--cluster-steps", "20", "--qat-steps", "20",
                     "--train-examples", "1280", "--eval-examples", "200"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # The weights crossed to tf_keras intact: the float stage scores what Keras 3 scored.
    assert accuracy >= 0.5 and abs(m["float_accuracy"] - accuracy) <= 0.01, (accuracy, m["float_accuracy"])
    # Pruning: every Conv2D / Dense kernel at the target sparsity, still there after clustering.
    assert len(m["sparsity_per_layer"]) > 30
    assert all(abs(s - 0.5) < 0.02 for s in m["sparsity_per_layer"].values()), m["sparsity_per_layer"]
    assert m["max_unique_values"] <= 17  # 16 shared values + the preserved zero
    # int8 TFLite from QAT: agrees with the QAT Keras model, accuracy kept, integer kernels.
    assert m["int8_method"] == "qat" and m["int8_agreement"] >= 0.9, m
    assert m["int8_tflite_accuracy"] >= m["float_accuracy"] - 0.1, m
    int8 = export.TFLiteModel(str(out / "int8.tflite"))
    assert sum(d["dtype"] is np.int8 for d in int8.interpreter.get_tensor_details()) > 50
    # Back in Keras 3: the clustered weights, equal to the clustered stage's TFLite file.
    compressed = keras.saving.load_model(out / "compressed.keras")
    kernels = [layer.kernel.numpy() for layer in compressed.layers if type(layer).__name__ == "Conv2D"]
    assert max(np.unique(k).size for k in kernels) <= 17
    x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(compressed(x)), export.TFLiteModel(str(out / "clustered.tflite"))(x),
                               atol=1e-4)
    assert (out / "compressed.weights.h5").exists() and (out / "report.md").exists()


@pytest.mark.slow(seconds=8)
def test_cli_compress_bad_input_fails_before_any_work(tmp_path, capsys):
    model = mobilenet_tf.build("v1", alpha=0.25, input_shape=(32, 32, 3), classes=4, include_preprocessing=True)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    out = str(tmp_path / "out")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}")
    cases = [
        ([str(tmp_path / "m.keras"), "--name", "v1", "--out", str(tmp_path / "done")], "holds a finished run"),
        (["missing.keras"], "`model_path` 'missing.keras' does not exist"),
        ([str(tmp_path / "m.keras"), "--name", "v1", "--prune", "1.5"], "`--prune` (target sparsity) must be in"),
        ([str(tmp_path / "m.keras"), "--name", "v1", "--clusters", "1"], "`--clusters` must be >= 2; got 1"),
        ([str(tmp_path / "m.keras")], "cannot tell which model"),
        ([str(tmp_path / "m.keras"), "--name", "v1", "--alpha", "0.5"], "layer"),  # alpha 0.5: other shapes
        ([str(tmp_path / "m.keras"), "--name", "v2", "--alpha", "0.25"], "layer"),
        ([str(tmp_path / "m.weights.h5"), "--name", "v1", "--alpha", "0.25"], "pass --resolution and --classes"),
    ]
    for args, message in cases:
        assert cli.main(["compress", *args, *([] if "--out" in args else ["--out", out])]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not os.path.exists(out)


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


# One tf_keras process for every head (TensorFlow, tf_keras and TFMOT start once).
HEADS = ("facenet", "lraspp", "ssdlite")
HEADS_SCRIPT = textwrap.dedent("""
    import json, os, tempfile
    import numpy as np
    import mobilenet_tf
    from mobilenet_tf import compress, export
    from mobilenet_tf.heads import facenet, segmentation, ssdlite

    def check(head):
        rng = np.random.default_rng(0)
        if head == "facenet":
            model = facenet.build_embedding_model("v1", alpha=0.25, input_size=64, embedding_dim=32)
        elif head == "lraspp":
            model = segmentation.build_lraspp("v1", num_classes=4, input_shape=(64, 64, 3), alpha=0.25,
                                        pool_crop_size=(64, 64))
        else:
            model = ssdlite.build_ssdlite(backbone="v1", num_classes=4, input_size=64, alpha=0.25)
        for layer in model.layers:  # untrained features are ~0: give BatchNormalization statistics
            if type(layer).__name__ == "BatchNormalization":
                layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
        images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
        weights_before = len(model.weights)
        as_list = lambda outputs: [np.asarray(o) for o in (outputs.values() if isinstance(outputs, dict)  # noqa: E731
                                                           else outputs if isinstance(outputs, list) else [outputs])]
        reference = as_list(model(images, training=False))

        out = {}
        pruned = compress.strip(compress.prune(model, 0.5, end_step=10))
        clustered = compress.strip(compress.cluster(model, 8))
        out["pruned_kernels"] = len(compress.sparsity(pruned))
        out["clustered_kernels"] = len(compress.unique_values(clustered))
        out["max_unique"] = max(compress.unique_values(clustered).values())
        qat = compress.quantize_aware(model)
        for _ in range(3):  # calibrate the fake-quant ranges
            qat(images, training=True)
        out["original_unchanged"] = len(model.weights) == weights_before and all(
            np.allclose(a, b) for a, b in zip(as_list(model(images, training=False)), reference))
        path = export.to_tflite(qat, os.path.join(tempfile.mkdtemp(), "qat.tflite"), "qat")
        tflite = export.TFLiteModel(path)
        out["int8_tensors"] = sum(d["dtype"] is np.int8 for d in tflite.interpreter.get_tensor_details())
        # TFLite orders a dict's outputs its own way: pair them with Keras' by shape.
        keras_by_shape = {o.shape: o for o in as_list(qat(images, training=False))}
        pairs = [(lite, keras_by_shape[lite.shape]) for lite in as_list(tflite(images))]
        out["outputs"] = len(pairs)
        out["cosine"] = min(float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
                            for lite, ref in pairs for a, b in zip(lite.reshape(len(images), -1),
                                                                   ref.reshape(len(images), -1)))
        return out

    result = {head: check(head) for head in %r}
    # ShuffleNet's ChannelShuffle is a custom layer TFMOT has no QuantizeConfig for.
    try:
        compress.quantize_aware(mobilenet_tf.build("shufflenet_v2_x0_5", input_shape=(64, 64, 3), classes=4))
        result["shufflenet_message"] = None
    except ValueError as error:
        result["shufflenet_message"] = str(error)
    print("RESULT" + json.dumps(result))
""" % (HEADS,))


@pytest.mark.slow(seconds=152)
def test_heads_prune_cluster_and_quantize_to_int8_and_qat_names_an_unsupported_layer():
    result = run_legacy_keras(HEADS_SCRIPT, timeout=1800)
    for head in HEADS:
        r = result[head]
        # Every Conv2D / Dense kernel of backbone and head was wrapped; clustering shares <= 8 values.
        assert r["pruned_kernels"] == r["clustered_kernels"] > 14 and r["max_unique"] <= 8, (head, r)
        # TFMOT's wrappers must not change the caller's model (cluster_weights used to strip its kernels).
        assert r["original_unchanged"], (head, r)
        # The QAT model converts to int8 and TFLite computes what the fake-quant Keras model does
        # (per image and output, cosine of TFLite's and Keras' values).
        assert r["int8_tensors"] > 20 and r["outputs"] == (2 if head == "ssdlite" else 1), (head, r)
        # An untrained SSDLite's box and class outputs are near 0, below int8's step: its cosine
        # ranged from -0.11 to > 0.98 between runs, so its fidelity is the trained detector's
        # test (test_ssdlite_model, recipes/ssdlite_coco.py --tflite int8).
        assert head == "ssdlite" or r["cosine"] > 0.98, (head, r)
    # QAT of a model with a layer TFMOT cannot quantize names the layer and the fix.
    message = result["shufflenet_message"]
    assert message and "ChannelShuffle" in message, result
    assert "QuantizeConfig" in message and "OUTPUT_QUANTIZED" in message, result
