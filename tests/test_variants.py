"""The registry's variant records: feature information against the built models, options
by family, the tables derived from the records, and the builders that read them."""

import json

import numpy as np
import pytest

import keras
import mobilenet_tf
from conftest import PUBLISHED_VARIANTS, run
from mobilenet_tf import registry, weights as weights_lib, zoo
from mobilenet_tf.heads import facenet

ALL = mobilenet_tf.list_models()
# A non-square input checks two sizes in one build: height and width differ by 32, so every
# map of stride s differs by exactly 32 / s ("same" and Caffe-style "valid" layers alike).
HEIGHT, WIDTH = 96, 128


def _check_features(model, info, output_stride=32):
    assert list(model.output) == [feature.name for feature in info]
    for feature in info:
        tensor = model.output[feature.name]
        height, width, channels = tensor.shape[1:]
        assert channels == feature.channels, feature
        assert (width - height) * feature.stride == WIDTH - HEIGHT, feature
        for side, size in ((height, HEIGHT), (width, WIDTH)):
            # ceil(size / stride) for "same" layers; "valid" stems (SqueezeNet, Xception) lose up to 6 pixels.
            assert abs(side * feature.stride - size) <= max(feature.stride, 8), feature
        assert model.get_layer(feature.layer).output.name == tensor.name, feature
    assert info[-1].stride == min(max(f.stride for f in info), output_stride)


@pytest.mark.parametrize("name", ALL)
def test_feature_info_matches_the_built_endpoints(name):
    record = registry.get_entry(name)
    info = record.feature_info()
    model = mobilenet_tf.build(name, input_shape=(HEIGHT, WIDTH, 3), include_top=False, return_endpoints=True)
    _check_features(model, info)
    if record.width_argument == "alpha":  # a second width, with the reduced tail the heads use
        info = record.feature_info(alpha=0.5, reduced_tail=True)
        model = mobilenet_tf.build(name, input_shape=(HEIGHT, WIDTH, 3), include_top=False, return_endpoints=True,
                                   alpha=0.5, reduced_tail=True)
        _check_features(model, info)
        assert info[-1].channels < record.feature_info()[-1].channels


@pytest.mark.parametrize("name, output_stride", [("v3_small", 16), ("squeezenet1_1", 8), ("shufflenet_v2_x0_5", 16)])
def test_build_features_reports_strides_under_dilation(name, output_stride):
    model, info = registry.build_features(name, output_stride=output_stride, input_shape=(HEIGHT, WIDTH, 3))
    _check_features(model, list(info.values()), output_stride)
    assert max(feature.stride for feature in info.values()) == output_stride


def test_squeezenet_names_its_stride_16_map_c4():
    info = registry.get_entry("squeezenet1_1").feature_info()
    assert [(f.name, f.stride) for f in info] == [("C1", 2), ("C2", 4), ("C3", 8), ("C4", 16)]


def test_feature_info_of_the_heads_taps():
    v3 = {f.name: f for f in registry.get_entry("v3_large").feature_info(reduced_tail=True, output_stride=16)}
    assert (v3["C4_expand"].stride, v3["C4_expand"].channels, v3["C4_expand"].layer) == \
        (16, 672, "expanded_conv_12_expand_act")
    assert (v3["C5"].stride, v3["C5"].channels) == (16, 480)
    v2 = {f.name: f for f in registry.get_entry("v2").feature_info(alpha=1.4)}
    assert (v2["C4_expand"].layer, v2["C5"].layer, v2["C5"].channels) == ("block_13_expand_relu", "out_relu", 1792)


@pytest.mark.parametrize("name, options, message", [
    ("shufflenet_v2_x1_0", dict(alpha=0.5),
     r"`alpha` applies to v1, v2, v3_\*; 'shufflenet_v2_x1_0' has its width in its name \(shufflenet_v2_x0_5, "
     r"shufflenet_v2_x1_0, shufflenet_v2_x1_5, shufflenet_v2_x2_0\).* Got alpha=0.5"),
    ("squeezenet1_1", dict(alpha=0.75), r"`alpha` applies to v1, v2, v3_\*; 'squeezenet1_1' has no width multiplier"),
    ("shufflenet_v1_g3", dict(alpha=2.0), r"'shufflenet_v1_g3' has no width multiplier .*width="),
    ("xception", dict(reduced_tail=True),
     r"`reduced_tail` applies to v1, v2, v3_\*; 'xception' has no reduced tail\. Got reduced_tail=True"),
])
def test_options_a_family_does_not_take_are_refused(name, options, message):
    with pytest.raises(ValueError, match=message):
        registry.options_for(name, **options)
    with pytest.raises(ValueError, match=message):
        registry.build_features(name, input_shape=(96, 96, 3), **options)


def test_options_for_passes_what_the_family_takes():
    assert registry.options_for("v3_small", alpha=0.75, reduced_tail=True) == dict(alpha=0.75, reduced_tail=True)
    assert registry.options_for("v1") == {}
    # The width a family has, and no reduced tail, pass for every family (recipes' and runs' defaults).
    assert registry.options_for("shufflenet_v2_x0_5", alpha=1.0, reduced_tail=False) == {}
    with pytest.raises(ValueError, match="unknown model name 'v9'"):
        registry.options_for("v9")


def test_reduced_tail_default_is_one_rule_for_every_head():
    assert {r.name: r.reduced_tail for r in registry.variants() if r.reduced_tail is not None} == {
        "v1": False, "v2": False, "v3_large": True, "v3_small": True,
        "v3_large_minimalistic": True, "v3_small_minimalistic": True}
    _, info = registry.build_features("v3_small", input_shape=(64, 64, 3))
    assert info["C5"].channels == 288  # halved: the V3 heads' default
    _, info = registry.build_features("v2", alpha=0.35, input_shape=(64, 64, 3))
    assert info["C5"].channels == 1280


def test_input_range_follows_the_builders_preprocessing_default():
    ranges = {r.name: r.input_range for r in registry.variants()}
    assert ranges["v1"] == ranges["v2"] == ranges["xception"] == (-1.0, 1.0)
    assert ranges["v3_small"] == ranges["shufflenet_v2_x1_0"] == ranges["squeezenet1_1"] == (0.0, 255.0)


class _Offered(Exception):
    """keras.applications got as far as downloading: it has these weights."""


def _offered(constructor, **kwargs):
    try:
        constructor(weights="imagenet", **kwargs)
    except _Offered:
        return True
    except (ValueError, KeyError):  # refused, or no weight file (V3 minimalistic at 0.75)
        return False
    raise AssertionError("keras.applications built a model without downloading weights")


@pytest.mark.slow(seconds=12)
def test_published_weights_equal_what_keras_applications_offers(monkeypatch):
    """Probed offline: keras.applications refuses unpublished widths and sizes before
    downloading, and a published one reaches the download (stubbed here)."""
    from keras.src.utils import file_utils

    def download(*args, **kwargs):
        raise _Offered()

    monkeypatch.setattr(file_utils, "get_file", download)
    candidates = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    for record in registry.variants():
        if record.width_argument != "alpha":
            continue
        constructor = getattr(keras.applications, record.published.constructor)
        alphas = tuple(a for a in candidates if _offered(constructor, alpha=a, input_shape=(224, 224, 3),
                                                         **record.fixed))
        assert alphas == record.published.alphas == weights_lib.PUBLISHED_ALPHAS[record.name], record.name
    for name in ("v1", "v2"):
        constructor = getattr(keras.applications, registry.get_entry(name).published.constructor)
        sizes = tuple(s for s in range(64, 257, 32) if _offered(constructor, input_shape=(s, s, 3)))
        assert sizes == weights_lib.PUBLISHED_SIZES[name], name
    from keras.src.applications import mobilenet_v3

    assert {key.split("_")[-3] for key in mobilenet_v3.WEIGHTS_HASHES} == {"224"}
    assert all(weights_lib.PUBLISHED_SIZES[r.name] == (224,) for r in registry.variants()
               if r.family == "mobilenet_v3")
    assert weights_lib.PUBLISHED_SIZES["xception"] == (299,) and "squeezenet1_1" not in weights_lib.PUBLISHED_ALPHAS


def test_derived_tables_have_no_hand_copies():
    assert PUBLISHED_VARIANTS == [(r.name, a) for r in registry.variants() if r.width_argument == "alpha"
                                  for a in r.published.alphas]
    assert ("v2", 1.4) in PUBLISHED_VARIANTS and ("v3_small_minimalistic", 1.0) in PUBLISHED_VARIANTS
    assert zoo.PAPER_ROWS == registry.paper_rows() and zoo.PAPER_ROWS[0].name == "v1"
    assert {row.name for row in zoo.PAPER_ROWS} == {r.name for r in registry.variants() if r.family.startswith("mob")}
    assert weights_lib.keras_application("v3_small_minimalistic", input_shape=(64, 64, 3)).count_params() == \
        mobilenet_tf.build("v3_small_minimalistic", input_shape=(64, 64, 3)).count_params()


@pytest.mark.parametrize("name, size", [("shufflenet_v2_x0_5", 64), ("squeezenet1_1", 64), ("xception", 80),
                                        ("shufflenet_v1_g3", 64)])
def test_facenet_student_on_every_family(name, size):
    model = facenet.build_embedding_model(name, input_size=size, embedding_dim=16)
    out = run(model, np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32"))
    assert out.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=f"`alpha` applies to v1, v2, v3_\\*; '{name}'"):
        facenet.build_embedding_model(name, alpha=0.5, input_size=size)


def test_facenet_student_keeps_the_mobilenet_layers():
    model = facenet.build_embedding_model("v3_small", alpha=0.75, input_size=64, embedding_dim=8)
    plain = mobilenet_tf.build("v3_small", alpha=0.75, input_shape=(64, 64, 3), include_top=False, pooling="avg")
    assert model.get_layer("avg_pool").output.shape[-1] == plain.output.shape[-1] == 432  # no reduced tail
    assert model.count_params() == plain.count_params() + 432 * 8 + 8


def test_compress_rebuilds_a_shufflenet_run_from_its_config(tmp_path):
    """`mobilenet-tf compress` on a ShuffleNet trained by the ImageNet recipe: the run's
    config.json records alpha 1.0; the parent and the tf_keras child build the same model."""
    from mobilenet_tf import cli, deep_compression

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(dict(model="shufflenet_v2_x0_5", alpha=1.0, image_size=32,
                                                         dataset="synthetic", synthetic_classes=4)))
    args = cli.get_args_parser().parse_args(["compress", str(run_dir / "model.keras"), "--out",
                                             str(tmp_path / "out")])
    name, alpha = cli._builder_args(args)
    assert (name, alpha) == ("shufflenet_v2_x0_5", 1.0)
    parent = cli.rebuild(name, alpha, 32, 4)
    child = deep_compression.build_model(deep_compression.Config(model=name, alpha=alpha, input_size=32, classes=4))
    assert parent.output_shape == child.output_shape == (None, 4)
    assert parent.count_params() == child.count_params()
    with pytest.raises(ValueError, match="'shufflenet_v2_x0_5' has its width in its name"):
        deep_compression.build_model(deep_compression.Config(model=name, alpha=0.5, input_size=32, classes=4))


def test_ssdlite_takes_any_backbone_with_stride_16_and_32_maps():
    """Strides from the feature information: a ShuffleNet has both maps (C4, C5); SqueezeNet's
    last map is C4 at stride 16 and is refused as such."""
    from mobilenet_tf.heads.ssdlite import model as ssd

    model = ssd.build_ssdlite("shufflenet_v2_x0_5", num_classes=3, input_size=128)
    assert ssd.feature_map_sizes(model)[:2] == [(8, 8), (4, 4)]
    assert model.get_layer("box_predictor0_dw").input.shape[-1] == 96  # C4 of shufflenet_v2_x0_5
    with pytest.raises(ValueError, match=r"'squeezenet1_1' has no stride-32 map"):
        ssd.build_ssdlite("squeezenet1_1", num_classes=3, input_size=128)
