"""SqueezeNet, ShuffleNet V1/V2 and Xception (issue 9): fidelity, endpoints, errors, saving, export."""

import numpy as np
import pytest

import keras
import mobilenet_tf
from conftest import randomize_batchnorm, run
from mobilenet_tf import export, weights as weights_lib
from mobilenet_tf.heads import segmentation

# Reference parameter counts: torchvision (trainable parameters; BN statistics are buffers there)
# and keras.applications.Xception (count_params, BN statistics included).
TORCHVISION_PARAMS = {
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}
# Multiply-adds at 224 (millions): ShuffleNet V1 Table 1 (1x), V2 Table 5, torchvision's
# SqueezeNet GFLOPS (0.82, 0.35).
PAPER_MADDS = {
    "shufflenet_v1_g1": 143, "shufflenet_v1_g2": 140, "shufflenet_v1_g3": 137, "shufflenet_v1_g4": 133,
    "shufflenet_v1_g8": 137, "shufflenet_v2_x0_5": 41, "shufflenet_v2_x1_0": 146, "shufflenet_v2_x1_5": 299,
    "shufflenet_v2_x2_0": 591, "squeezenet1_0": 820, "squeezenet1_1": 350,
}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameters_equal_torchvision(name):
    assert trainable(mobilenet_tf.build(name, input_shape=(224, 224, 3))) == TORCHVISION_PARAMS[name]


def test_shufflenet_v1_g3_parameters_match_mmpretrain():
    # mmpretrain's ShuffleNetV1 1.0x (group=3): 1.87M parameters (printed to 0.01M).
    assert round(trainable(mobilenet_tf.build("shufflenet_v1_g3")) / 1e6, 2) == 1.87


@pytest.mark.slow(seconds=4)
def test_xception_parameters_and_layer_names_equal_keras_applications():
    ours = mobilenet_tf.build("xception")
    ref = keras.applications.Xception(weights=None)
    assert ours.count_params() == ref.count_params() == 22_910_480
    named = lambda m: {layer.name: [tuple(w.shape) for w in layer.weights] for layer in m.layers
                       if layer.weights and not weights_lib._AUTO_NAME.match(layer.name)
                       and not layer.name.endswith(weights_lib.ORDER_MATCHED_SUFFIXES)}
    assert named(ours) == named(ref)


@pytest.mark.parametrize("name", sorted(PAPER_MADDS))
def test_madds_match_the_papers(name):
    madds = mobilenet_tf.profile(mobilenet_tf.build(name, input_shape=(224, 224, 3))).madds / 1e6
    assert abs(madds / PAPER_MADDS[name] - 1) < 0.02, madds


@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
@pytest.mark.slow(seconds=4)
def test_xception_weight_transfer_gives_identical_outputs(include_top, images):
    keras.utils.set_random_seed(2)
    kwargs = dict(input_shape=(96, 96, 3), include_top=include_top)
    if include_top:
        kwargs["classifier_activation"] = None
    source = weights_lib.keras_application("xception", **kwargs)
    randomize_batchnorm(source)
    ours = mobilenet_tf.build("xception", **kwargs)
    copied = weights_lib.load_keras_applications_weights(ours, source)
    assert len(copied) == sum(1 for layer in source.layers if layer.weights)
    x = images(size=96)
    expected, got = run(source, x), run(ours, x)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_array_less(np.abs(got - expected).max(), 1e-4)


@pytest.mark.slow(seconds=4)
def test_xception_imagenet_weights_come_from_keras_applications_at_299(monkeypatch):
    """The download needs internet; the rest runs here with a random keras.applications.Xception."""
    calls = {}
    real = weights_lib.keras_application

    def offline(variant, **kwargs):
        assert kwargs.pop("weights") == "imagenet"
        calls.update(kwargs, variant=variant, model=real(variant, weights=None, **kwargs))
        randomize_batchnorm(calls["model"], seed=4)
        return calls["model"]

    monkeypatch.setattr(weights_lib, "keras_application", offline)
    ours = mobilenet_tf.build("xception", input_shape=(128, 128, 3), include_top=False, weights="imagenet")
    # keras.applications only loads Xception's weights at 299 (with the top, at no other size).
    assert calls["variant"] == "xception" and calls["input_shape"] == (299, 299, 3)
    source = calls["model"]
    for ours_name, source_layer in [("block14_sepconv2", source.get_layer("block14_sepconv2")),
                                    ("block2_residual_conv",
                                     [l for l in source.layers if l.name.startswith("conv2d")][0]),
                                    ("block13_residual_bn", [l for l in source.layers
                                                             if l.name.startswith("batch_normalization")][-1])]:
        for a, b in zip(ours.get_layer(ours_name).get_weights(), source_layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    mobilenet_tf.build("xception", weights="imagenet")
    assert calls["input_shape"] == (299, 299, 3) and calls["include_top"] is True


@pytest.mark.parametrize("name, output_stride, rates", [
    ("xception", 16, {"block12_sepconv1": 1, "block13_sepconv1": 1, "block14_sepconv1": 2}),
    ("xception", 8, {"block4_sepconv1": 1, "block5_sepconv1": 2, "block13_sepconv1": 2, "block14_sepconv1": 4}),
    ("shufflenet_v2_x1_0", 16, {"stage4_unit1_branch2_dwconv": 1, "stage4_unit2_branch2_dwconv": 2}),
    ("shufflenet_v1_g3", 8, {"stage3_unit1_dwconv": 1, "stage3_unit2_dwconv": 2, "stage4_unit2_dwconv": 4}),
    ("squeezenet1_1", 8, {"fire5_expand3x3": 1, "fire6_expand3x3": 2, "fire9_expand3x3": 2}),
])
def test_output_stride_sets_deeplab_dilation_rates(name, output_stride, rates):
    model = mobilenet_tf.build(name, input_shape=(128, 128, 3), include_top=False, output_stride=output_stride)
    assert {layer: model.get_layer(layer).dilation_rate[0] for layer in rates} == rates
    assert model.output_shape[1] == 128 // output_stride or name.startswith("squeezenet")


@pytest.mark.parametrize("name, channels, sizes", [
    # SqueezeNet's last map is at stride 16: C4, and no C5 (endpoints are named by their stride).
    ("squeezenet1_1", {"C1": 64, "C2": 128, "C3": 256, "C4": 512}, (111, 55, 27, 13)),
    ("squeezenet1_0", {"C1": 96, "C2": 256, "C3": 512, "C4": 512}, (109, 54, 27, 13)),
    ("shufflenet_v1_g3", {"C1": 24, "C2": 24, "C3": 240, "C4": 480, "C5": 960}, (112, 56, 28, 14, 7)),
    ("shufflenet_v2_x1_0", {"C1": 24, "C2": 24, "C3": 116, "C4": 232, "C5": 1024}, (112, 56, 28, 14, 7)),
    ("xception", {"C1": 64, "C2": 128, "C3": 256, "C4": 728, "C5": 2048}, (109, 55, 28, 14, 7)),
])
def test_endpoints(name, channels, sizes):
    model = mobilenet_tf.build(name, input_shape=(224, 224, 3), include_top=False, return_endpoints=True)
    assert set(model.output) == set(channels)
    for (key, channel), size in zip(sorted(channels.items()), sizes):
        assert tuple(model.output[key].shape[1:]) == (size, size, channel), key


@pytest.mark.parametrize("name", ["shufflenet_v1_g8", "shufflenet_v2_x0_5", "xception"])
def test_output_stride_16_dilates_and_keeps_weights(name):
    base = mobilenet_tf.build(name, input_shape=(128, 128, 3), include_top=False, return_endpoints=True)
    dilated = mobilenet_tf.build(name, input_shape=(128, 128, 3), include_top=False, return_endpoints=True,
                                 output_stride=16)
    assert base.count_params() == dilated.count_params()
    assert dilated.output["C5"].shape[1] == 2 * base.output["C5"].shape[1]
    assert run(dilated, np.zeros((1, 128, 128, 3), "float32"))["C5"].shape[1] == 2 * base.output["C5"].shape[1]


@pytest.mark.parametrize("name", ["squeezenet1_0", "shufflenet_v1_g2", "shufflenet_v2_x1_5"])
def test_unknown_input_size_runs_at_several_sizes(name):
    model = mobilenet_tf.build(name, include_top=False, pooling="avg")
    for size in (64, 97):
        out = run(model, np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32"))
        assert out.shape == (1, model.output_shape[-1]) and np.all(np.isfinite(out))


def test_squeezenet_pooling_rounds_up_like_caffe_at_any_size():
    # ceil((n - 3) / 2) + 1 after each pool, also for unknown and non-square sizes.
    model = mobilenet_tf.build("squeezenet1_1", include_top=False, return_endpoints=True)
    out = run(model, np.zeros((1, 224, 200, 3), "float32"))
    assert out["C2"].shape[1:3] == (55, 49) and out["C3"].shape[1:3] == (27, 24)


def test_channel_shuffle_moves_channels_as_the_paper_says():
    from mobilenet_tf.channel_ops import ChannelShuffle, ChannelSplit

    x = np.arange(12, dtype="float32").reshape(1, 1, 1, 12)
    # 3 groups of 4 channels -> channel g*4 + i goes to i*3 + g.
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(3)(x)).ravel(),
                                  [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
    first, second = ChannelSplit()(x)
    np.testing.assert_array_equal(np.asarray(second).ravel(), np.arange(6, 12))


@pytest.mark.slow(seconds=4)
def test_shufflenet_saves_and_reloads_without_custom_objects(tmp_path, images):
    model = mobilenet_tf.build("shufflenet_v2_x0_5", input_shape=(96, 96, 3), classes=5)
    model.save(tmp_path / "s.keras")
    restored = keras.models.load_model(tmp_path / "s.keras")
    x = images(size=96, low=0, high=255)
    np.testing.assert_allclose(run(restored, x), run(model, x), atol=1e-6)


@pytest.mark.slow(seconds=14)
@pytest.mark.parametrize("name", ["shufflenet_v1_g3", "shufflenet_v2_x0_5", "squeezenet1_1"])
def test_tflite_fp32_matches_keras(name, tmp_path, images):
    model = mobilenet_tf.build(name, input_shape=(96, 96, 3), classes=10, classifier_activation=None)
    randomize_batchnorm(model)
    x = images(n=2, size=96, low=0, high=255)
    tflite = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "m.tflite")))
    expected = run(model, x)
    np.testing.assert_allclose(tflite(x), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    # One XNNPACK partition: the channel shuffle's reshapes are constant (shapes read from
    # the tensor split ShuffleNet into 33).
    assert tflite.op_counts()["DELEGATE"] == 1 and tflite.ops_outside_delegate() == {}


def test_channel_shuffle_at_unknown_sizes_equals_the_static_model(images):
    """At an unknown height and width the shuffle reads them from the tensor; the same
    weights give the same outputs as the model built at the size."""
    static = mobilenet_tf.build("shufflenet_v1_g3", input_shape=(64, 64, 3), classes=5)
    dynamic = mobilenet_tf.build("shufflenet_v1_g3", input_shape=(None, None, 3), classes=5)
    dynamic.set_weights(static.get_weights())
    x = images(n=2, size=64, low=0, high=255)
    np.testing.assert_allclose(run(dynamic, x), run(static, x), atol=1e-6)
    assert run(dynamic, images(n=1, size=96, low=0, high=255)).shape == (1, 5)


@pytest.mark.slow(seconds=8)
def test_lraspp_on_shufflenet_converts_at_batch_1_and_runs_a_batch_of_2(tmp_path, images):
    """Its dilated last stage makes the file batch-1 (``export.has_dilated_convolutions``);
    the channel shuffles' constant reshapes (-1 for the batch) still run a batch of 2.
    (At 64 px the pooling branch's AVERAGE_POOL_2D, a 4x4 window with strides (4, 5)
    over the 4x4 map, stays outside XNNPACK.)"""
    model = segmentation.build_lraspp("shufflenet_v2_x0_5", num_classes=3, input_shape=(128, 128, 3))
    randomize_batchnorm(model)
    assert export.has_dilated_convolutions(model)
    tflite = export.TFLiteModel(export.to_tflite(model, str(tmp_path / "m.tflite")))
    assert list(tflite.interpreter.get_input_details()[0]["shape_signature"]) == [1, 128, 128, 3]
    x = images(n=2, size=128, low=0, high=255)
    expected = run(model, x)
    np.testing.assert_allclose(tflite(x), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    assert tflite.op_counts()["DELEGATE"] == 1 and tflite.ops_outside_delegate() == {}


def test_new_families_feed_the_lraspp_head():
    for name in ("shufflenet_v2_x0_5", "squeezenet1_1"):
        model = segmentation.build_lraspp(name, num_classes=3, input_shape=(64, 64, 3))
        assert run(model, np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 3)
    with pytest.raises(ValueError, match=r"`alpha` applies to v1, v2, v3_\*; 'xception' has no width multiplier"):
        segmentation.build_lraspp("xception", alpha=0.5, input_shape=(128, 128, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: mobilenet_tf.shufflenet_v1(groups=5), r"`groups` must be one of \[1, 2, 3, 4, 8\]"),
    (lambda: mobilenet_tf.shufflenet_v1(groups=2, width=0.5), r"valid pairs are .*\(groups=3, width=0.5\)"),
    (lambda: mobilenet_tf.shufflenet_v2(width=0.75), r"`width` must be one of \[0.5, 1.0, 1.5, 2.0\]"),
    (lambda: mobilenet_tf.squeezenet(version="2_0"), r"`version` must be one of \['1_0', '1_1'\]"),
    (lambda: mobilenet_tf.build("squeezenet1_1", weights="imagenet"), "publishes no ImageNet weights"),
    (lambda: mobilenet_tf.build("xception", input_shape=(64, 64, 3)), "needs height and width >= 71"),
    (lambda: mobilenet_tf.build("shufflenet_v2_x1_0", width=2.0), "fixed by this name"),
    (lambda: mobilenet_tf.build("shufflenet_v1_g3", alpha=0.5), "unknown argument 'alpha'"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_tflite_format_flags():
    assert export.parse_formats("fp32,int8") == ["fp32", "int8"] and export.parse_formats("") == []
    assert [export.FORMATS[f] for f in export.parse_formats("fp32,float16,dynamic,int8")] == \
        [None, "float16", "dynamic", "int8"]
    with pytest.raises(ValueError, match=r"`--tflite` formats must be among \['fp32', 'int8'\]; got \['fp16'\]"):
        export.parse_formats("fp32,fp16", ("fp32", "int8"))
