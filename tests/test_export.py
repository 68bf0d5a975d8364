"""TFLite export: the int8 fast path of V3, the interpreters, trained-like BN statistics."""

import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import keras

import mobilenet_tf
from conftest import randomize_batchnorm
from mobilenet_tf import benchmark, export, op_profile
from mobilenet_tf.heads.facenet.model import L2Normalization


def _images(count, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.mark.slow(seconds=4)
def test_batchnorm_from_data_makes_inference_match_the_batch_statistics():
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(64, 64, 3), include_top=False)
    images = _images(8, 64)
    before = np.asarray(model(images, training=False))
    benchmark.batchnorm_from_data(model, images)
    after = np.asarray(model(images, training=False))
    np.testing.assert_allclose(after, np.asarray(model(images, training=True)), rtol=1e-3, atol=1e-3)
    # Random initialisation shrinks activations; data statistics restore their scale.
    assert np.std(after) > 10 * np.std(before)
    assert all(layer.momentum == 0.99 for layer in model.layers if type(layer).__name__ == "BatchNormalization")


def test_timed_rounds_rotate_so_no_function_always_runs_first():
    calls = []
    fns = [lambda x, k=k: calls.append(k) or x for k in range(3)]
    seconds = benchmark.median_seconds(fns, np.zeros(2), repeats=4, warmup=1)
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    rounds = [calls[3 + 3 * r: 6 + 3 * r] for r in range(4)]  # after one warm-up call each
    assert rounds == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


@pytest.mark.slow(seconds=24)
def test_int8_v3_runs_entirely_on_xnnpack_and_fp32_gets_the_fused_hard_swish(tmp_path):
    """Float files are converted from x * (ReLU6(x + 3) / 6), one HARD_SWISH op each;
    int8 files from x * ReLU6(x + 3) with the 1/6 in the next kernels
    (``fold_hard_swish_scale``): no HARD_SWISH op (XNNPACK has no int8 kernel for it),
    one XNNPACK partition, and no multiply besides the model's own products and the
    input scaling, which XNNPACK turns into one hard-swish operator each (TFLite's op
    profiler shows it). The stem convolution over RGB stays float in int8."""
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(96, 96, 3))
    images = _images(8, 96)
    benchmark.batchnorm_from_data(model, images)
    fp32_path = export.to_tflite(model, str(tmp_path / "fp32.tflite"))
    int8_path = export.to_tflite(model, str(tmp_path / "int8.tflite"), "int8", images[:, None])
    fp32, int8 = export.TFLiteModel(fp32_path, threads=2), export.TFLiteModel(int8_path, threads=2)
    swishes = sum(layer.name + "_scaled" in {other.name for other in model.layers} for layer in model.layers)
    multiplies = sum(type(layer).__name__ == "Multiply" for layer in model.layers)  # h-swish and SE products
    int8_ops, fp32_ops = int8.op_counts(), fp32.op_counts()
    assert swishes == 19 and fp32_ops["HARD_SWISH"] == swishes and "HARD_SWISH" not in int8_ops
    assert int8_ops["MUL"] == multiplies + 1  # + the input scaling; (x / 6) * ReLU6(x + 3) had 28 more
    assert int8_ops["DELEGATE"] == fp32_ops["DELEGATE"] == 1
    assert int8.ops_outside_delegate() == fp32.ops_outside_delegate() == {}
    np.testing.assert_allclose(fp32(images[:2]), np.asarray(model(images[:2])), atol=1e-5)
    np.testing.assert_allclose(int8(images[:2]), np.asarray(model(images[:2])), atol=0.05)
    # The stem convolution (and the input scaling before it) run in float, the rest in int8.
    bare = export.bare_interpreter(open(int8_path, "rb").read())
    dtypes = {t["index"]: t["dtype"] for t in bare.get_tensor_details()}
    convolutions = [op for op in bare._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [dtypes[op["inputs"][0]] == np.float32 for op in convolutions] == [True] + [False] * (len(convolutions) - 1)
    # TFLite's op profiler: one XNNPACK node per convolution, one hard-swish operator per
    # h-swish in fp32 (HardSwish) and in int8 (x * clamp(x + 3, 0, 6), fused by XNNPACK).
    fp32_kernels = {k.name: k for k in op_profile.op_profile(fp32_path, threads=2, runs=3).by_type}
    int8_kernels = {k.name: k for k in op_profile.op_profile(int8_path, threads=2, runs=3).by_type}
    for kernels, ops in ((fp32_kernels, fp32_ops), (int8_kernels, int8_ops)):
        convolution_nodes = sum(k.count for name, k in kernels.items() if "Convolution" in name or "Connected" in name)
        assert convolution_nodes == ops["CONV_2D"] + ops["DEPTHWISE_CONV_2D"]
        assert abs(sum(k.share for k in kernels.values()) - 1) < 0.02
    assert fp32_kernels["Delegate/HardSwish (NC)"].count == swishes
    assert int8_kernels["Delegate/Multiply (ND)"].count == multiplies + 1 - swishes
    assert "Delegate/Convolution (NHWC, F32) IGEMM" in int8_kernels  # the float stem
    # The fused graph shares the model's layers and leaves the model itself alone.
    # A model compiled with a loss Keras cannot deserialize (as the SSDLite recipe's is).
    model.compile(loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    fused = export.fuse_hard_swish(model)
    fused_names = [layer.name for layer in fused.layers]
    assert sum(n.endswith("_over_6") for n in fused_names) == swishes and not any(n.endswith("_scaled")
                                                                                  for n in fused_names)
    assert fused.get_layer("conv") is model.get_layer("conv")
    np.testing.assert_allclose(np.asarray(fused(images[:2])), np.asarray(model(images[:2])), atol=1e-6)
    plain = mobilenet_tf.build("v2", alpha=0.35, input_shape=(96, 96, 3))
    assert export.fuse_hard_swish(plain) is plain and export.fold_hard_swish_scale(plain) is plain
    # Dict outputs stay a dict (the SSDLite deploy graph reads output["classes"]).
    named = keras.Model(model.input, {"features": model.get_layer("conv").output, "logits": model.output})
    for rewrite in (export.fuse_hard_swish, export.fold_hard_swish_scale):
        rewritten = rewrite(named)
        assert isinstance(rewritten.output, dict) and set(rewritten.output) == {"features", "logits"}


@pytest.mark.slow(seconds=12)
def test_folding_the_hard_swish_scale_computes_the_same_function():
    """``fold_hard_swish_scale`` moves h-swish's and h-sigmoid's 1/6 into the kernels
    downstream: the same outputs for V3 classifiers, SSDLite and LR-ASPP. Where the scaled
    value reaches a layer that cannot take the factor (V3-Large's first h-swish feeds a
    residual add; a feature extractor's last one is its output), that h-swish keeps / 6."""
    from heads.segmentation.model import build_lraspp
    from heads.ssdlite.model import build_ssdlite

    images = _images(4, 96)
    models = {"v3_small": mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(96, 96, 3)),
              "v3_large": mobilenet_tf.build("v3_large", input_shape=(96, 96, 3)),  # at 0.35 no first residual
              "v3_large_features": mobilenet_tf.build("v3_large", input_shape=(96, 96, 3), include_top=False),
              "ssdlite": build_ssdlite("v3_small", num_classes=3, input_size=96, alpha=0.35),
              "lraspp": build_lraspp("v3_small", num_classes=3, input_shape=(96, 96, 3), alpha=0.35)}
    kept = {}
    for name, model in models.items():
        randomize_batchnorm(model)  # statistics from data made SSDLite's 1x1 maps chaotic (1e-6 in, 0.6 out)
        folded = export.fold_hard_swish_scale(model)
        kept[name] = sorted(layer.name for layer in folded.layers if layer.name.endswith("_scaled"))
        for ours, theirs in zip(keras.tree.flatten(folded(images, training=False)),
                                keras.tree.flatten(model(images, training=False))):
            theirs = np.asarray(theirs)
            np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4 * np.abs(theirs).max())
        # New layers where a kernel took a factor; the others (the stem) are the model's own.
        own = {layer.name: layer for layer in model.layers if type(layer).__name__ != "InputLayer"}
        taken = [layer for layer in folded.layers if layer.name in own and layer is not own[layer.name]]
        assert taken and {type(layer).__name__ for layer in taken} <= set(export.SCALE_TAKING_LAYERS)
        assert folded.get_layer("conv") is model.get_layer("conv")
    assert kept["v3_small"] == kept["ssdlite"] == kept["lraspp"] == []
    assert kept["v3_large"] == ["conv_act_scaled"]  # feeds expanded_conv's residual add
    last = models["v3_large_features"].layers[-1].name
    assert kept["v3_large_features"] == sorted(["conv_act_scaled", last + "_scaled"])


@pytest.mark.slow(seconds=16)
def test_onnx_runtime_runs_the_model_tf2onnx_converts(tmp_path, monkeypatch):
    """The peer deployment path: tf2onnx converts our model (h-swish fused, as float
    TFLite files), ONNX Runtime runs it as Keras does, at any batch size."""
    model = mobilenet_tf.build("v3_small", alpha=0.35, input_shape=(64, 64, 3))
    images = _images(3, 64)
    benchmark.batchnorm_from_data(model, images)
    onnx = export.ONNXModel(export.to_onnx(model, tmp_path / "model.onnx"), threads=2)
    for batch in (images[:1], images):
        np.testing.assert_allclose(onnx(batch), np.asarray(model(batch, training=False)), atol=1e-5)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # not installed
    with pytest.raises(ValueError, match="needs tf2onnx"):
        export.to_onnx(model, tmp_path / "other.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match="needs onnxruntime"):
        export.ONNXModel(tmp_path / "model.onnx")


def _int8_converter(saved_model, data=None):
    """A TFLite converter of ``saved_model`` set for int8, calibrated on ``data`` (None:
    no calibration data)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if data is not None:
        converter.representative_dataset = export.calibration_generator(data, 8)
    return converter


def _plain_int8(model, data, path):
    """The full-integer file a plain conversion writes (no op kept in float)."""
    with tempfile.TemporaryDirectory() as saved_model:
        export.save_inference(model, saved_model)
        converter = _int8_converter(saved_model, data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return export.TFLiteModel(export.write_file(str(path), converter.convert()))


def test_int8_keeps_what_xnnpack_cannot_run_in_int8_in_float(tmp_path):
    """GELU, softmax and a matmul of two activations have no int8 kernel in XNNPACK: a plain
    full-integer conversion leaves them to TFLite's kernels (split partitions, which
    ``ops_outside_delegate`` names); ``to_tflite`` keeps them float, on XNNPACK."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 8))
    x = keras.layers.Conv2D(8, 1, activation="gelu")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.reshape(t, (-1, 16, 8)))(x)  # a constant-shape RESHAPE
    x = keras.layers.Lambda(lambda t: keras.ops.matmul(t, keras.ops.transpose(t, (0, 2, 1))))(x)  # (B, 16, 16)
    x = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(keras.layers.Softmax()(x)))
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    data = [np.random.default_rng(i).normal(size=(1, 4, 4, 8)).astype("float32") for i in range(8)]
    ours = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "ours.tflite"), "int8", data))
    plain = _plain_int8(model, data, tmp_path / "plain.tflite")
    assert plain.ops_outside_delegate() == {"GELU": 1, "BATCH_MATMUL": 1, "SOFTMAX": 2}
    assert plain.op_counts()["DELEGATE"] > 1
    assert ours.ops_outside_delegate() == {} and ours.op_counts()["DELEGATE"] == 1
    np.testing.assert_allclose(ours(data[0]), model(data[0]), atol=0.05)


def test_int8_keeps_the_ops_xnnpack_refuses_after_calibration_in_float(tmp_path):
    """An int8 ADD of a shortcut far smaller than the sum (its input and output scales
    far apart) is refused by XNNPACK, as other ops can be after a calibration:
    ``to_tflite`` finds the refused ops in the quantized file and keeps them float."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    branch = keras.layers.Rescaling(1e5)(keras.layers.Conv2D(8, 1)(x))  # dwarfs the shortcut x
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(keras.layers.Add()([x, branch])))
    data = [np.random.default_rng(i).normal(size=(1, 8, 8, 8)).astype("float32") for i in range(8)]
    plain = _plain_int8(model, data, tmp_path / "plain.tflite")
    assert plain.ops_outside_delegate() == {"ADD": 1}
    path = export.to_tflite(model, str(tmp_path / "ours.tflite"), "int8", data)
    ours = export.TFLiteModel(path)
    assert ours.ops_outside_delegate() == {} and ours.op_counts()["DELEGATE"] == 1
    flatbuffer = open(path, "rb").read()
    assert export.refused_by_xnnpack(flatbuffer) == []
    reference = np.asarray(model(data[0]))
    np.testing.assert_allclose(ours(data[0]), reference, atol=0.05 * np.abs(reference).max())
    np.testing.assert_array_equal(export.TFLiteModel(flatbuffer)(data[0]), ours(data[0]))  # from bytes, no file

    saved_model = tmp_path / "saved"
    export.save_inference(model, str(saved_model))
    with pytest.raises(ValueError, match="needs a converter with `optimizations` and a `representative_dataset`"):
        export.int8_keeping_float(_int8_converter(saved_model))
    # Byte for byte what TFLite's public selective quantization (QuantizationDebugger
    # with the same deny lists) gives, with the refused ADD kept float the second time.
    ours, theirs = _int8_converter(saved_model, data), _int8_converter(saved_model, data)

    def deny(nodes=()):
        return tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(export.FLOAT_IN_INT8),
                                                             denylisted_nodes=list(nodes))

    debugger = tf.lite.experimental.QuantizationDebugger(converter=theirs, debug_dataset=theirs.representative_dataset,
                                                         debug_options=deny())
    refused = export.refused_by_xnnpack(debugger.get_nondebug_quantized_model())
    assert len(refused) == 1
    debugger.options = deny(refused)
    assert export.int8_keeping_float(ours) == debugger.get_nondebug_quantized_model()


def test_int8_keeps_a_lone_relu_and_the_l2_normalisation_in_float(tmp_path):
    """Neither has an int8 kernel in XNNPACK either: a ReLU after a residual add that the
    add cannot absorb (its output also feeds the next add; Xception's pre-activations)
    and FaceNet's L2 normalisation (ABS, MAXIMUM, DIV, RSQRT). Kept in float, they run
    on XNNPACK; only the normalisation's divisor guard (GREATER, SELECT_V2, no XNNPACK
    kernel in any precision) stays outside, as in fp32."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    added = keras.layers.Add()([x, keras.layers.Conv2D(8, 1)(inputs)])
    x = keras.layers.Add()([added, keras.layers.Conv2D(8, 3, padding="same")(keras.layers.ReLU()(added))])
    x = keras.layers.Dense(16)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, L2Normalization()(x))
    data = [np.random.default_rng(i).normal(size=(1, 8, 8, 8)).astype("float32") for i in range(8)]
    ours = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "ours.tflite"), "int8", data))
    plain = _plain_int8(model, data, tmp_path / "plain.tflite")
    assert {"RELU", "ABS", "MAXIMUM", "DIV", "RSQRT"} <= set(plain.ops_outside_delegate())
    assert ours.ops_outside_delegate() == {"GREATER": 1, "SELECT_V2": 1} and ours.op_counts()["DELEGATE"] == 2
    fp32 = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "fp32.tflite")))
    assert fp32.ops_outside_delegate() == {"GREATER": 1, "SELECT_V2": 1} and fp32.op_counts()["DELEGATE"] == 2
    np.testing.assert_allclose(ours(data[0]), model(data[0]), atol=0.05)


def test_dilated_convolutions_convert_to_one_op_each_on_xnnpack(tmp_path):
    """TensorFlow runs a dilated convolution as SPACE_TO_BATCH_ND -> conv ->
    BATCH_TO_SPACE_ND (ops XNNPACK refuses: two more partitions each, the
    BatchNormalization after it unfolded); converted at a fixed batch of 1 the three
    fold into one dilated conv. The file still runs any batch size."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 24, 8))
    x = keras.layers.DepthwiseConv2D(5, dilation_rate=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, dilation_rate=4, padding="same")(x))
    randomize_batchnorm(model)
    assert export.has_dilated_convolutions(model)
    assert not export.has_dilated_convolutions(mobilenet_tf.build("v1", alpha=0.25, input_shape=(32, 32, 3)))
    x = np.random.default_rng(0).normal(size=(3, 16, 24, 8)).astype("float32")
    fp32 = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "fp32.tflite")))
    int8 = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "int8.tflite"), "int8", x[:, None]))
    for tflite in (fp32, int8):
        counts = tflite.op_counts()
        assert "SPACE_TO_BATCH_ND" not in counts and "BATCH_TO_SPACE_ND" not in counts, counts
        assert counts["DEPTHWISE_CONV_2D"] == counts["CONV_2D"] == counts["DELEGATE"] == 1, counts
    np.testing.assert_allclose(fp32(x), np.asarray(model(x, training=False)), atol=1e-4)  # batch 3


@pytest.mark.slow(seconds=11)
def test_litert_and_tensorflow_interpreters_agree(tmp_path):
    model = mobilenet_tf.build("v2", alpha=0.35, input_shape=(64, 64, 3), classes=5, classifier_activation=None)
    path = export.to_tflite(model, str(tmp_path / "m.tflite"))
    x = _images(3, 64)
    litert, tensorflow = export.TFLiteModel(path, 2, "litert"), export.TFLiteModel(path, 2, "tensorflow")
    assert export.default_runtime() == "litert" == litert.runtime  # ai-edge-litert is a test dependency
    np.testing.assert_allclose(litert(x), tensorflow(x), atol=1e-6)
    np.testing.assert_allclose(litert(x), np.asarray(model(x)), atol=1e-4)
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        export.TFLiteModel(path, runtime="onnx")
