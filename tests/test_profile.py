"""Params and multiply-adds against keras.applications counts and the papers' tables."""

import pathlib

import pytest

import keras
import mobilenet_tf
from mobilenet_tf import profile, zoo
from mobilenet_tf.profile import layer_madds

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name, alpha, madds", [
    ("v1", 1.0, 568_740_000), ("v1", 0.75, 325_400_000), ("v2", 1.0, 300_770_000),
    ("v2", 1.4, 582_200_000), ("v3_large", 1.0, 216_590_000), ("v3_small", 1.0, 56_510_000),
    ("v3_small", 0.75, 43_400_000), ("v3_large_minimalistic", 1.0, 209_140_000),
])
def test_madds_reproduce_issue_figures(name, alpha, madds):
    """The figures counted on keras.applications (PAPERS.md section 7), to 0.05%."""
    result = zoo.measure_variant(name, alpha, 224)
    assert result.madds == pytest.approx(madds, rel=5e-4)


@pytest.mark.parametrize("row", zoo.PAPER_ROWS, ids=lambda r: f"{r.name}-{r.alpha:g}-{r.resolution}")
def test_paper_tables(row):
    """V1 Tables 6-7, V2 Table 4, V3 Table 3: MAdds within 2%; params within the
    paper's printed precision (0.1M), counted as the papers do (conv + dense)."""
    if not (row.check_madds or row.check_params):
        assert row.note  # an unchecked row says where it is checked (MobileNetV4: test_mobilenet_v4.py)
        return
    result = zoo.measure(row)
    if row.check_madds:
        assert result.madds / 1e6 == pytest.approx(row.madds_m, rel=0.02)
    if row.check_params:
        assert abs(result.conv_dense_params / 1e6 - row.params_m) <= 0.1


def test_layer_formulas_by_hand():
    inp = keras.Input((14, 14, 512))
    dw = keras.layers.DepthwiseConv2D(3, padding="same")
    pw = keras.layers.Conv2D(512, 1)
    full = keras.layers.Conv2D(512, 3, padding="same")
    grouped = keras.layers.Conv2D(512, 1, groups=4)
    sep = keras.layers.SeparableConv2D(512, 3, padding="same")
    keras.Model(inp, [pw(dw(inp)), full(inp), grouped(inp), sep(inp)])
    # V1 paper Table 3: full conv 462M MAdds, depthwise separable 52.3M.
    assert layer_madds(full) == 14 * 14 * 512 * 512 * 9  # 462.4M
    assert layer_madds(dw) + layer_madds(pw) == 14 * 14 * 512 * (9 + 512)  # 52.3M
    assert layer_madds(grouped) == 14 * 14 * 512 * 512 // 4
    assert layer_madds(sep) == layer_madds(dw) + layer_madds(pw)
    dense_in = keras.Input((7, 100))
    dense = keras.layers.Dense(10)
    keras.Model(dense_in, dense(dense_in))
    assert layer_madds(dense) == 7 * 100 * 10


def test_profile_rows_totals_and_text():
    model = mobilenet_tf.build("v3_small")
    result = profile(model)
    assert result.params == model.count_params() == sum(r.params for r in result.layers)
    assert result.madds == sum(r.madds for r in result.layers)
    assert result.trainable_params == 2_542_856  # torchvision's count for mobilenet_v3_small
    row = next(r for r in result.layers if r.name == "conv")
    assert row.madds == 112 * 112 * 16 * 27 and row.output_shape == (112, 112, 16)
    text = result.table()
    assert "expanded_conv_3_squeeze_excite_conv" in text and "56.5M multiply-adds" in text
    assert result.to_dict(per_layer=True)["layers"][0]["name"] == result.layers[0].name


def test_profile_unknown_size_needs_input_shape():
    model = mobilenet_tf.build("v3_small", include_top=False)
    with pytest.raises(ValueError, match="pass `input_shape="):
        profile(model)
    at_224 = profile(model, input_shape=(224, 224, 3))
    assert at_224.madds == profile(mobilenet_tf.build("v3_small", input_shape=(224, 224, 3),
                                                      include_top=False)).madds
    with pytest.raises(TypeError, match="needs a keras.Model"):
        profile("v3_small")


def test_profile_counts_through_nested_models():
    backbone = mobilenet_tf.build("v3_small", input_shape=(96, 96, 3), include_top=False)
    inp = keras.Input((96, 96, 3))
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(backbone(inp)))
    wrapped = profile(keras.Model(inp, out))
    assert wrapped.madds == profile(backbone).madds + 576 * 4
    assert any(r.name.startswith(backbone.name + "/") for r in wrapped.layers)


@pytest.mark.slow(seconds=4)
def test_readme_zoo_table_is_the_profilers_output():
    text = README.read_text()
    start, end = "<!-- zoo:start -->\n", "<!-- zoo:end -->"
    assert start in text and end in text, "README lost its zoo markers"
    table = text.split(start)[1].split(end)[0].strip()
    assert table == zoo.zoo_markdown().strip(), "regenerate with `mobilenet-tf zoo`"
