"""MobileNetV4: exact sizes against Model Garden and timm, Mobile MQA's arithmetic, save /
load, TFLite, and the heads on V4 backbones."""

import math
import pathlib

import numpy as np
import pytest

import mobilenet_tf
from conftest import randomize_batchnorm, run
from mobilenet_tf import benchmark, export, registry
from mobilenet_tf._keras import keras
from mobilenet_tf.v4_layers import LayerScale, MultiQueryAttention, StochasticDepth
from mobilenet_tf.heads import facenet, segmentation, ssdlite
from mobilenet_tf.mobilenet_v4 import ARCHITECTURES, MQA, mobilenet_v4

VARIANTS = tuple(ARCHITECTURES)
BIG = ("conv_large", "hybrid_large")  # 1.8-2.4 s to build at 224: the full suite only

# Trainable parameters at 224 with a 1000-class top. Model Garden's builder and timm 1.0.31
# (the sum over ``model.parameters()``) both count exactly these; BN moving statistics are
# not trainable and not in them.
TRAINABLE = {"conv_small": 3_774_024, "conv_medium": 9_715_512, "conv_large": 32_590_864,
             "hybrid_medium": 11_074_648, "hybrid_large": 37_764_624}

# Multiply-adds at each variant's native resolution: timm's models counted with fvcore
# (its Conv2d + Linear counts; timm 1.0.31, fvcore 0.1.5), measured once. fvcore leaves the
# attention matmuls out; our profiler counts them too, checked by formula below. The
# paper prints 0.2 / 1.0 / 5.9 / 1.2 / 7.2 G, rounded.
TIMM_CONV_LINEAR_MACS = {"conv_small": (224, 186_005_568), "conv_medium": (256, 1_080_244_224),
                         "conv_large": (384, 6_376_220_672), "hybrid_medium": (256, 1_229_240_320),
                         "hybrid_large": (384, 7_372_138_496)}


def _attention_madds(variant, resolution):
    """Q K^T and attention x V of every MQA block, by hand: queries = (side / stride)^2 *
    heads, keys = (side / (stride * kv_stride))^2, each pair key_dim + value_dim MACs."""
    arch, stride, total = ARCHITECTURES[variant], 2, 0
    for row in arch.blocks:
        stride *= row.stride
        if isinstance(row, MQA):
            side = resolution // stride
            total += side * side * row.heads * (side // row.kv_stride) ** 2 * 2 * row.key_dim
    return total


@pytest.mark.parametrize("variant", [v if v not in BIG else pytest.param(v, marks=pytest.mark.slow(seconds=4))
                                     for v in VARIANTS])
def test_sizes_equal_model_garden_and_timm(variant):
    name = "v4_" + variant
    model = mobilenet_tf.build(name, input_shape=(224, 224, 3))
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == TRAINABLE[variant]
    resolution, conv_linear = TIMM_CONV_LINEAR_MACS[variant]
    result = mobilenet_tf.profile(model, input_shape=(resolution, resolution, 3))
    attention = sum(r.madds for r in result.layers if r.kind == "MultiQueryAttention")
    assert result.madds - attention == conv_linear
    assert attention == _attention_madds(variant, resolution)
    assert (attention > 0) == variant.startswith("hybrid")
    assert registry.get_entry(name).paper_rows[0].resolution == resolution


def test_tables_keep_the_reference_structure():
    """Endpoint channels (PAPERS.md section 8), GELU and layer scale where Model Garden has them."""
    channels = {v: [f.channels for f in registry.get_entry("v4_" + v).feature_info()] for v in VARIANTS}
    assert channels["conv_small"] == [32, 32, 64, 96, 960]
    assert channels["conv_medium"] == channels["hybrid_medium"] == [32, 48, 80, 160, 960]
    assert channels["conv_large"] == channels["hybrid_large"] == [24, 48, 96, 192, 960]
    arch = ARCHITECTURES
    assert [v for v in VARIANTS if arch[v].layer_scale] == ["hybrid_medium", "hybrid_large"]
    assert [v for v in VARIANTS if arch[v].activation == "gelu"] == ["hybrid_large"]
    mqa = [(r.heads, r.key_dim, r.kv_stride) for r in arch["hybrid_large"].blocks if isinstance(r, MQA)]
    assert mqa == [(8, 48, 2)] * 4 + [(8, 64, 1)] * 4


def test_multi_query_attention_is_softmax_of_shared_keys():
    """The layer against the formula written per head: one key and one value for all heads,
    on a non-square map with keys at half the resolution."""
    rng = np.random.default_rng(0)
    heads, key_dim, value_dim = 3, 4, 5
    query = rng.normal(size=(2, 6, 4, heads * key_dim)).astype("float32")
    key = rng.normal(size=(2, 3, 2, key_dim)).astype("float32")
    value = rng.normal(size=(2, 3, 2, value_dim)).astype("float32")
    out = np.asarray(MultiQueryAttention(heads, key_dim)([query, key, value]))
    assert out.shape == (2, 6, 4, heads * value_dim)
    k, v = key.reshape(2, -1, key_dim), value.reshape(2, -1, value_dim)
    for h in range(heads):
        q = query[..., h * key_dim:(h + 1) * key_dim].reshape(2, -1, key_dim)
        logits = np.einsum("bqd,bkd->bqk", q, k) / np.sqrt(key_dim)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        expected = np.einsum("bqk,bkd->bqd", weights, v).reshape(2, 6, 4, value_dim)
        np.testing.assert_allclose(out[..., h * value_dim:(h + 1) * value_dim], expected, atol=1e-5)


def test_stochastic_depth_drops_whole_examples_in_training_only():
    shortcut = np.ones((2000, 2, 2, 3), "float32")
    branch = np.full((2000, 2, 2, 3), 2.0, "float32")
    layer = StochasticDepth(0.3)
    np.testing.assert_array_equal(np.asarray(layer([shortcut, branch])), shortcut + branch)  # inference: Add
    out = np.asarray(layer([shortcut, branch], training=True))
    dropped = np.all(out == 1.0, axis=(1, 2, 3))
    kept = np.all(np.isclose(out, 1.0 + 2.0 / 0.7), axis=(1, 2, 3))
    assert np.all(dropped | kept) and abs(dropped.mean() - 0.3) < 0.04  # per example, rescaled by 1 / (1 - rate)
    with pytest.raises(ValueError, match=r"`rate` \(stochastic depth\) must be in \[0, 1\)"):
        StochasticDepth(1.0)


@pytest.mark.slow(seconds=5)
def test_stochastic_depth_rates_grow_along_the_table_and_inference_is_unchanged(tmp_path):
    plain = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), classes=5)
    model = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), classes=5, stochastic_depth_rate=0.2)
    drops = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    residual = sum(type(layer).__name__ == "Add" for layer in plain.layers)
    # Model Garden's rule: UIB rates grow linearly along the table, attention blocks take the full rate.
    names = {layer.name for layer in model.layers}
    mqa = [drop.rate for drop in drops if drop.name.removesuffix("add") + "attention" in names]
    uib = [drop.rate for drop in drops if drop.name.removesuffix("add") + "attention" not in names]
    assert len(drops) == residual and len(mqa) == 8 and uib == sorted(uib) and 0 < uib[0] < uib[-2] < uib[-1] == pytest.approx(0.2)
    assert mqa == [pytest.approx(0.2)] * 8
    flat = mobilenet_tf.build("v4_conv_small", input_shape=(64, 64, 3), stochastic_depth_rate=0.1,
                              flat_stochastic_depth=True)
    assert {layer.rate for layer in flat.layers if isinstance(layer, StochasticDepth)} == {0.1}
    model.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(run(model, x), run(plain, x), atol=1e-6)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(run(keras.models.load_model(tmp_path / "m.keras"), x), run(plain, x), atol=1e-6)
    with pytest.raises(ValueError, match=r"`stochastic_depth_rate` must be a number in \[0, 1\); got 1.5"):
        mobilenet_tf.build("v4_conv_small", stochastic_depth_rate=1.5)


def _randomize(model, seed=0):
    """Non-trivial BN statistics and layer scales near 1 (at their 1e-5 init the
    hybrids' blocks are almost the identity, and a comparison would test little)."""
    randomize_batchnorm(model, seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, LayerScale):
            layer.set_weights([rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32")])


@pytest.mark.slow(seconds=12)
@pytest.mark.parametrize("variant", ["conv_small", "hybrid_medium"])
def test_saves_loads_and_converts_to_tflite(variant, tmp_path, images):
    model = mobilenet_tf.build("v4_" + variant, input_shape=(96, 96, 3), classes=10, classifier_activation=None)
    _randomize(model)
    x = images(n=1, size=96, low=0, high=255)
    expected = run(model, x)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(run(keras.models.load_model(tmp_path / "m.keras"), x), expected, atol=1e-5)
    tflite = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "m.tflite")))
    np.testing.assert_allclose(tflite(x), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    # Attention's reshapes are constant (no SHAPE ops splitting the graph): XNNPACK takes
    # the whole graph in one partition.
    counts = tflite.op_counts()
    assert counts["DELEGATE"] == 1 and "SHAPE" not in counts, counts
    assert counts.get("BATCH_MATMUL", 0) == 2 * sum(isinstance(r, MQA) for r in ARCHITECTURES[variant].blocks)


@pytest.mark.slow(seconds=20)
def test_int8_hybrid_stays_in_one_xnnpack_partition(tmp_path, images):
    """XNNPACK has no int8 kernel for attention's BATCH_MATMUL / SOFTMAX or for GELU: the
    int8 file keeps them in float (each would split the graph: Hybrid-L at 224 had 51
    partitions). As in benchmarks/deploy.py: BN statistics from data, layer scales at
    their init (random layer scales near 1 leave int8 ADDs with scale ratios XNNPACK
    refuses, which no trained model has)."""
    model = mobilenet_tf.build("v4_hybrid_large", input_shape=(64, 64, 3), classes=10)
    x = images(n=8, size=64, low=0, high=255)
    benchmark.batchnorm_from_data(model, x)
    tflite = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "int8.tflite"), "int8", x[:, None]))
    counts = tflite.op_counts()
    assert counts["DELEGATE"] == 1 and counts["BATCH_MATMUL"] == 2 * 8 and counts["GELU"] > 40, counts
    float_ops = {op["op_name"] for op in tflite.interpreter._get_ops_details()
                 if op["op_name"] in export.FLOAT_IN_INT8
                 and tflite.interpreter.get_tensor_details()[op["outputs"][0]]["dtype"] is np.float32}
    assert float_ops == {"BATCH_MATMUL", "SOFTMAX", "GELU"}, float_ops
    assert sum(d["dtype"] is np.int8 for d in tflite.interpreter.get_tensor_details()) > 300
    probabilities = tflite(x)
    assert probabilities.shape == (8, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)  # a float softmax


@pytest.mark.slow(seconds=6)
def test_symmetric_padding_keeps_shapes_and_weights_but_shifts_outputs():
    """timm's padding (k // 2 on every side of a stride-2 conv) against TF's "same": same
    shapes and weights, different outputs (why converted timm weights need it)."""
    same = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 96, 3), include_top=False)
    symmetric = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 96, 3), include_top=False,
                                   padding="symmetric")
    assert [w.shape for w in same.weights] == [w.shape for w in symmetric.weights]
    _randomize(same)
    symmetric.set_weights(same.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    a, b = run(same, x), run(symmetric, x)
    # float noise alone: ~1e-6 of the largest output
    assert a.shape == b.shape == (1, 2, 3, 960) and np.abs(a - b).max() > 1e-3 * np.abs(a).max() > 0
    assert sum(type(layer).__name__ == "ZeroPadding2D" for layer in symmetric.layers) == \
        sum(getattr(layer, "strides", (1,))[0] == 2 for layer in same.layers)


@pytest.mark.slow(seconds=10)
def test_heads_take_v4_backbones():
    detector = ssdlite.build_ssdlite("v4_hybrid_medium", num_classes=3, input_size=128)
    out = detector(np.zeros((1, 128, 128, 3), "float32"))
    assert out["classes"].shape[0] == 1 and out["boxes"].shape[-1] == 4
    segmenter = segmentation.build_lraspp("v4_conv_small", num_classes=3, input_shape=(64, 64, 3))
    assert run(segmenter, np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 3)
    embedding = facenet.build_embedding_model("v4_conv_small", input_size=64, embedding_dim=16)
    assert run(embedding, np.zeros((2, 64, 64, 3), "float32")).shape == (2, 16)
    model, info = registry.build_features("v4_hybrid_medium", output_stride=16, input_shape=(64, 64, 3))
    assert info["C5"].stride == 16 and model.output["C5"].shape[1] == 4
    any_size = mobilenet_tf.build("v4_hybrid_medium", include_top=False)  # attention on maps of unknown size
    for height, width in ((64, 64), (96, 128)):
        assert run(any_size, np.zeros((1, height, width, 3), "float32")).shape == (1, height // 32, width // 32, 960)


@pytest.mark.parametrize("call, message", [
    (lambda: mobilenet_v4("conv_tiny"), r"`variant` must be one of \['conv_large'"),
    (lambda: mobilenet_v4(padding="reflect"), r"`padding` must be one of \('same', 'symmetric'\)"),
    (lambda: mobilenet_tf.build("v4_conv_small", alpha=0.5), "unknown argument 'alpha'"),
    (lambda: mobilenet_tf.build("v4_conv_small", weights="imagenet"), "no ImageNet weights for v4_conv_small"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


DATA = pathlib.Path(__file__).parent / "data"


def _timm_state(variant, seed=0):
    """A synthetic timm state dict: every name and shape timm's model has (recorded from
    timm 1.0.31 in tests/data), random values."""
    rng = np.random.default_rng(seed)
    state = {}
    for line in (DATA / f"timm_mobilenetv4_{variant}_keys.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shape = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        state[key] = (np.asarray(rng.integers(0, 100)) if key.endswith("num_batches_tracked")
                      else rng.uniform(0.5, 1.5, shape).astype("float32"))
    return state


@pytest.mark.slow(seconds=8)
def test_timm_checkpoint_loads_by_name_with_timms_conventions(tmp_path):
    from safetensors.numpy import save_file

    state = _timm_state("hybrid_medium")
    save_file(state, str(tmp_path / "model.safetensors"))
    model = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), weights=str(tmp_path / "model.safetensors"))
    layer = model.get_layer
    np.testing.assert_array_equal(layer("stem").kernel.numpy(), state["conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("stage0_0_expand").kernel.numpy(),  # FusedIB: conv_exp
                                  state["blocks.0.0.conv_exp.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("stage2_4_key_down").kernel.numpy(),  # depthwise
                                  state["blocks.2.4.attn.key.down_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(layer("stage2_4_key_down_bn").moving_variance.numpy(),
                                  state["blocks.2.4.attn.key.norm.running_var"])
    np.testing.assert_array_equal(layer("stage3_15_layer_scale").gamma.numpy(), state["blocks.3.15.layer_scale.gamma"])
    np.testing.assert_array_equal(layer("conv_1").kernel.numpy(), state["blocks.4.0.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer("predictions").kernel.numpy(), state["classifier.weight"].T)
    # timm's conventions: symmetric padding, BN epsilon 1e-5, ImageNet mean / std.
    assert any(type(l).__name__ == "ZeroPadding2D" for l in model.layers)
    assert {l.epsilon for l in model.layers if type(l).__name__ == "BatchNormalization"} == {1e-5}
    assert layer("normalization") is not None and "rescaling" not in [l.name for l in model.layers]
    # Without the top, timm's head tensors are left out; another variant's file is refused by name.
    features = mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), include_top=False,
                                  weights=str(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(features.get_layer("conv_1_bn").gamma.numpy(), state["blocks.4.0.bn1.weight"])
    save_file(_timm_state("conv_small"), str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match=r"the checkpoint has no tensor 'blocks.0.0.conv_exp.weight' for layer "
                                         r"'stage0_0_expand'"):
        mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), weights=str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match=r"'classifier.weight' for layer 'predictions' has shape \(1280, 1000\)"):
        mobilenet_tf.build("v4_hybrid_medium", input_shape=(64, 64, 3), classes=10,
                           weights=str(tmp_path / "model.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="is not a readable .safetensors checkpoint"):
        mobilenet_tf.build("v4_hybrid_medium", weights=str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match="does not exist"):
        mobilenet_tf.build("v4_conv_small", weights=str(tmp_path / "missing.safetensors"))


def test_conv_small_checkpoint_covers_every_weight(tmp_path):
    """Conv-S (ConvBN rows, UIB, no layer scale): every timm tensor finds its layer, and a
    tensor the model has no place for is refused by name."""
    from safetensors.numpy import save_file

    state = _timm_state("conv_small")
    save_file(state, str(tmp_path / "m.safetensors"))
    model = mobilenet_tf.build("v4_conv_small", input_shape=(64, 64, 3), weights=str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(model.get_layer("stage0_1_conv_bn").beta.numpy(), state["blocks.0.1.bn1.bias"])
    state["blocks.2.9.extra.weight"] = np.zeros(3, "float32")
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match=r"tensor 'blocks.2.9.extra.weight' \(and 0 more\) has no layer"):
        mobilenet_tf.build("v4_conv_small", input_shape=(64, 64, 3), weights=str(tmp_path / "extra.safetensors"))
