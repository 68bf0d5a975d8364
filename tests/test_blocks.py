import numpy as np
import pytest

import keras
from mobilenet_tf import blocks


def keras_depth(v, divisor=8, min_value=None):
    """keras.applications.mobilenet_v3._depth, copied as the reference."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def test_make_divisible_matches_reference_rule_and_properties():
    for channels in (16, 24, 32, 40, 48, 64, 72, 96, 112, 160, 320, 576, 960, 1280):
        for alpha in (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.3, 1.4, 2.0):
            value = channels * alpha
            rounded = blocks.make_divisible(value)
            assert rounded == keras_depth(value)
            assert rounded % 8 == 0 and rounded >= 8
            assert rounded >= 0.9 * value  # never more than 10% down
    assert blocks.make_divisible(32 * 0.35) == 16  # 11.2 -> 8 would lose > 10%
    assert blocks.make_divisible(12) == 16
    assert blocks.make_divisible(3) == 8  # min_value


def _apply(fn, x):
    inp = keras.Input(shape=x.shape[1:])
    return keras.Model(inp, fn(inp)).predict(x, verbose=0)


def test_hard_swish_and_sigmoid_match_paper_formula():
    x = np.linspace(-8, 8, 161, dtype="float32").reshape(1, 161, 1)
    relu6 = np.clip(x + 3, 0, 6)
    np.testing.assert_allclose(_apply(lambda t: blocks.hard_sigmoid(t, "hs"), x), relu6 / 6, atol=1e-6)
    np.testing.assert_allclose(_apply(lambda t: blocks.hard_swish(t, "hw"), x), x * relu6 / 6, atol=1e-6)


def test_activation_rejects_unknown_kind():
    with pytest.raises(ValueError,
                       match=r"activation must be one of \(.relu., .relu6., .hard_swish., .gelu.\), got .swish."):
        blocks.activation(keras.Input((4, 4, 8)), "swish", "a")


def test_squeeze_excite_scales_channels_with_gate_in_0_1():
    inp = keras.Input((8, 8, 32))
    model = keras.Model(inp, blocks.squeeze_excite(inp, 8, "se_"))
    x = np.random.default_rng(0).uniform(1, 2, (2, 8, 8, 32)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == x.shape
    gate = y / x  # one gate per (image, channel), the same at every position
    np.testing.assert_allclose(gate, gate[:, :1, :1, :].repeat(8, 1).repeat(8, 2), rtol=1e-5)
    assert gate.min() >= 0 and gate.max() <= 1


def test_reduce_tail_halves_last_stage_like_torchvision():
    from mobilenet_tf.mobilenet_v3 import V3_LARGE

    rows = blocks.reduce_tail(V3_LARGE.blocks)
    last = [(r.expanded, r.filters) for r in rows[-3:]]
    assert last == [(672, 80), (480, 80), (480, 80)]  # torchvision _reduced_tail
    assert rows[:-3] == V3_LARGE.blocks[:-3]
