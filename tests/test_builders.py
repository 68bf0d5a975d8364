"""Backbone builders: shapes, widths, names, endpoints, dilation, training, saving."""

import numpy as np
import pytest

import keras
import mobilenet_tf
from mobilenet_tf import weights as weights_lib
from conftest import PUBLISHED_VARIANTS, run, slow_unless_representative

ALL = mobilenet_tf.list_models()


def test_list_models_is_the_documented_set():
    assert ALL == sorted(["v1", "v2", "v3_large", "v3_large_minimalistic", "v3_small", "v3_small_minimalistic",
                          "squeezenet1_0", "squeezenet1_1", "xception"]
                         + [f"shufflenet_v1_g{g}" for g in (1, 2, 3, 4, 8)]
                         + [f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")]
                         + [f"v4_{v}" for v in ("conv_small", "conv_medium", "conv_large", "hybrid_medium",
                                                "hybrid_large")])


# The development loop (``-m "not slow"``) builds one model of each family; the full suite every one.
FAMILY_REPRESENTATIVES = ("v1", "v2", "v3_small", "v4_conv_small", "squeezenet1_1", "shufflenet_v1_g1",
                          "shufflenet_v2_x0_5", "xception")


@pytest.mark.parametrize("name", slow_unless_representative(ALL, FAMILY_REPRESENTATIVES, seconds=3))
def test_classifier_shapes_and_functional(name):
    height = 80 if name == "xception" else 64  # Xception needs >= 71
    model = mobilenet_tf.build(name, input_shape=(height, 96, 3), classes=7)
    assert isinstance(model, keras.Model) and model.__class__.__name__ == "Functional"
    out = run(model, np.zeros((2, height, 96, 3), "float32"))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)  # softmax


@pytest.mark.parametrize("name, alpha", slow_unless_representative(
    PUBLISHED_VARIANTS, [("v1", 1.0), ("v2", 1.0), ("v3_large", 1.0), ("v3_small", 1.0)], seconds=3))
def test_params_and_weight_names_equal_keras_applications(name, alpha):
    ours = mobilenet_tf.build(name, alpha=alpha, input_shape=(224, 224, 3))
    ref = weights_lib.keras_application(name, alpha=alpha, input_shape=(224, 224, 3))
    assert ours.count_params() == ref.count_params()
    weighted = lambda m: {layer.name: [tuple(w.shape) for w in layer.weights]
                          for layer in m.layers if layer.weights}
    assert weighted(ours) == weighted(ref)  # the layer-name contract


@pytest.mark.parametrize("name, channels", [
    ("v1", {"C1": 64, "C2": 128, "C3": 256, "C4": 512, "C5": 1024}),
    ("v2", {"C1": 16, "C2": 24, "C3": 32, "C4": 96, "C4_expand": 576, "C5_block": 320, "C5": 1280}),
    ("v3_large", {"C1": 16, "C2": 24, "C3": 40, "C4": 112, "C4_expand": 672, "C5_block": 160, "C5": 960}),
    ("v3_small", {"C1": 16, "C2": 16, "C3": 24, "C4": 48, "C4_expand": 288, "C5_block": 96, "C5": 576}),
])
@pytest.mark.slow(seconds=3)
def test_endpoints_strides_and_channels(name, channels):
    model = mobilenet_tf.build(name, input_shape=(320, 320, 3), include_top=False, return_endpoints=True)
    strides = {"C1": 2, "C2": 4, "C3": 8, "C4": 16, "C4_expand": 16, "C5_block": 32, "C5": 32}
    assert set(model.output) == set(channels)
    for key, tensor in model.output.items():
        assert tuple(tensor.shape[1:]) == (320 // strides[key], 320 // strides[key], channels[key]), key
    outputs = run(model, np.zeros((1, 320, 320, 3), "float32"))
    assert outputs["C5"].shape == (1, 10, 10, channels["C5"])


@pytest.mark.slow(seconds=4)
def test_endpoint_taps_are_the_expected_layers():
    model = mobilenet_tf.build("v3_large", include_top=False, return_endpoints=True)
    # C4_expand is the activation after bneck 13's expansion conv (SSDLite's first map).
    assert model.output["C4_expand"].shape[-1] == model.get_layer("expanded_conv_12_expand").filters
    v2 = mobilenet_tf.build("v2", include_top=False, return_endpoints=True)
    produced = {v2.get_layer("block_13_expand_relu").output.name, v2.get_layer("out_relu").output.name}
    assert {v2.output["C4_expand"].name, v2.output["C5"].name} == produced


@pytest.mark.parametrize("name", ["v1", "v2", "v3_large", "v3_small"])
@pytest.mark.slow(seconds=3)
def test_output_stride_16_dilates_last_stage_and_keeps_weights(name):
    plain = mobilenet_tf.build(name, input_shape=(128, 128, 3), include_top=False, return_endpoints=True)
    dilated = mobilenet_tf.build(name, input_shape=(128, 128, 3), include_top=False,
                                 return_endpoints=True, output_stride=16)
    assert dilated.output["C5"].shape[1:3] == (8, 8)
    assert plain.output["C5"].shape[1:3] == (4, 4)
    assert plain.count_params() == dilated.count_params()
    rates = [l.dilation_rate for l in dilated.layers if type(l).__name__ == "DepthwiseConv2D"]
    assert rates[-1] == (2, 2) and rates[0] == (1, 1)
    strides = [l.strides for l in dilated.layers if type(l).__name__ == "DepthwiseConv2D"]
    assert strides.count((2, 2)) == 3  # strides 4, 8, 16 remain; 32 became dilation


def test_output_stride_8():
    model = mobilenet_tf.build("v3_small", input_shape=(64, 64, 3), include_top=False, output_stride=8)
    assert model.output.shape[1:3] == (8, 8)


@pytest.mark.parametrize("name, c4_expand, c5", [("v3_large", 672, 480), ("v3_small", 288, 288), ("v2", 576, 640)])
@pytest.mark.slow(seconds=4)
def test_reduced_tail_halves_last_stage(name, c4_expand, c5):
    model = mobilenet_tf.build(name, input_shape=(320, 320, 3), include_top=False,
                               return_endpoints=True, reduced_tail=True)
    assert model.output["C4_expand"].shape[-1] == c4_expand
    assert model.output["C5"].shape[-1] == c5
    assert model.output["C4"].shape[-1] == mobilenet_tf.build(
        name, include_top=False, return_endpoints=True).output["C4"].shape[-1]


def test_reduced_tail_with_output_stride_16_has_no_residual_on_dilated_block():
    # V3-Small's reduced stride-32 block maps 48 -> 48 channels; it must stay a
    # non-residual block when its stride becomes dilation (torchvision does the same).
    model = mobilenet_tf.build("v3_small", include_top=False, reduced_tail=True, output_stride=16)
    names = {layer.name for layer in model.layers}
    assert "expanded_conv_8_add" not in names and "expanded_conv_9_add" in names


@pytest.mark.parametrize("size", [32, 33, 57, 100, 225])
def test_any_input_size_from_32(size):
    model = mobilenet_tf.build("v3_small", input_shape=(size, size, 3), include_top=False)
    out = run(model, np.zeros((1, size, size, 3), "float32"))
    expected = -(-size // 32)  # "same" padding: ceil(size / 32)
    assert out.shape == (1, expected, expected, 576)


def test_unknown_spatial_size_runs_at_several_sizes():
    model = mobilenet_tf.build("v2", include_top=False, pooling="avg")
    assert tuple(model.input.shape) == (None, None, None, 3)
    for size in (64, 97):
        assert run(model, np.zeros((1, size, size, 3), "float32")).shape == (1, 1280)


@pytest.mark.parametrize("pooling, shape", [(None, (4, 4, 576)), ("avg", (576,)), ("max", (576,))])
def test_pooling(pooling, shape):
    model = mobilenet_tf.build("v3_small", input_shape=(128, 128, 3), include_top=False, pooling=pooling)
    assert tuple(model.output.shape[1:]) == shape


@pytest.mark.slow(seconds=4)
def test_input_tensor_and_preprocessing_contract(images):
    inp = keras.Input((96, 96, 3))
    model = mobilenet_tf.build("v2", input_tensor=inp, include_top=False, pooling="avg",
                               include_preprocessing=True)
    assert model.input is inp
    plain = mobilenet_tf.build("v2", input_shape=(96, 96, 3), include_top=False, pooling="avg")
    plain.set_weights(model.get_weights())
    pixels = images(low=0, high=255)
    np.testing.assert_allclose(run(model, pixels),
                               run(plain, pixels / 127.5 - 1), atol=1e-4)


def test_alpha_and_depth_multiplier_change_width():
    narrow = mobilenet_tf.build("v1", alpha=0.5, include_top=False)
    assert narrow.output.shape[-1] == 512
    deep = mobilenet_tf.build("v1", depth_multiplier=2, include_top=False, input_shape=(64, 64, 3))
    assert tuple(deep.get_layer("conv_dw_1").weights[0].shape) == (3, 3, 32, 2)
    wide = mobilenet_tf.build("v3_small", alpha=1.25, input_shape=(64, 64, 3))
    assert wide.get_layer("conv_2").filters == 1280  # 1024 * 1.25, scaled only above 1


@pytest.mark.slow(seconds=10)
def test_fit_and_evaluate_compose_like_any_keras_model():
    keras.utils.set_random_seed(0)
    model = mobilenet_tf.build("v3_small", alpha=0.75, input_shape=(32, 32, 3), classes=2, dropout_rate=0.0)
    # Plain SGD: tracing Adam's update for ~150 variables costs ~20 s more on 2 cores.
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 127.5).astype("int32")
    x[y == 1, :, :, 0] = 255  # a trivially learnable cue
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0)[1] > 0.5


@pytest.mark.parametrize("name", ["v1", "v3_large"])
@pytest.mark.slow(seconds=9)
def test_save_and_load_keras_file_without_custom_objects(name, tmp_path, images):
    model = mobilenet_tf.build(name, input_shape=(64, 64, 3), classes=5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = images(size=64, low=0, high=255)
    np.testing.assert_allclose(run(loaded, x), run(model, x), atol=1e-6)


@pytest.mark.slow(seconds=5)
def test_endpoint_model_saves(tmp_path):
    model = mobilenet_tf.build("v3_small", input_shape=(64, 64, 3), include_top=False, return_endpoints=True)
    model.save(tmp_path / "e.keras")
    loaded = keras.models.load_model(tmp_path / "e.keras")
    assert set(loaded.output) == set(model.output)


@pytest.mark.parametrize("name", ["v2", "v3_small"])
@pytest.mark.slow(seconds=4)
def test_mixed_precision_computes_float16_and_predicts_float32(name, images):
    from conftest import randomize_batchnorm

    reference = mobilenet_tf.build(name, input_shape=(64, 64, 3), classifier_activation=None)
    randomize_batchnorm(reference)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = mobilenet_tf.build(name, input_shape=(64, 64, 3), classifier_activation=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.layers[3].compute_dtype == "float16"
    assert mixed.output.dtype == "float32"
    x = images(size=64, low=0, high=255) if name.startswith("v3") else images(size=64)
    expected = run(reference, x)
    got = run(mixed, x)
    assert got.dtype == np.float32 and np.abs(expected).max() > 1e-2
    assert np.abs(got - expected).max() <= 0.03 * np.abs(expected).max()
