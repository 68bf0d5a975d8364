"""Registry lookups and the early, clear errors for bad arguments."""

import pytest

import keras
import mobilenet_tf
from mobilenet_tf import registry


def test_unknown_name_lists_valid_names_and_closest():
    message = r"unknown model name 'v3_smal'\. Did you mean 'v3_small'\? Valid names: shufflenet_v1_g1, "
    with pytest.raises(ValueError, match=message):
        mobilenet_tf.build("v3_smal")


def test_unknown_keyword_argument():
    with pytest.raises(ValueError, match=r"unknown argument 'apha' for model 'v2'\. Did you mean 'alpha'\?"):
        mobilenet_tf.build("v2", apha=0.5)
    with pytest.raises(ValueError, match="minimalistic is fixed by this name"):
        mobilenet_tf.build("v3_small_minimalistic", minimalistic=False)
    with pytest.raises(ValueError, match="unknown argument 'minimalistic' for model 'v1'"):
        mobilenet_tf.build("v1", minimalistic=True)


def test_minimalistic_name_equals_flag():
    a = mobilenet_tf.build("v3_small_minimalistic", input_shape=(64, 64, 3))
    b = mobilenet_tf.build("v3_small", minimalistic=True, input_shape=(64, 64, 3))
    assert a.count_params() == b.count_params()
    assert not any("squeeze_excite" in layer.name for layer in a.layers)


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("v1")(lambda: None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0), r"`alpha` must be a number > 0 .* got 0"),
    (dict(alpha=-0.5), r"`alpha` must be a number > 0"),
    (dict(alpha="big"), r"`alpha` must be a number > 0"),
    (dict(input_shape=(16, 16, 3)), r"`input_shape` \(16, 16, 3\) is too small .* >= 32"),
    (dict(input_shape=(224, 224)), r"`input_shape` must be a 3-tuple \(height, width, channels\)"),
    (dict(input_shape=(3, 224, 224)), r"is too small or not an integer in height"),
    (dict(input_shape=(224, 224, 0)), r"invalid channels 0"),
    (dict(input_shape=(224.0, 224, 3)), r"not an integer in height"),
    (dict(pooling="mean", include_top=False), r"`pooling` must be one of \(None, 'avg', 'max'\); got 'mean'"),
    (dict(classes=0), r"`classes` must be an integer >= 1; got 0"),
    (dict(dropout_rate=1.0), r"`dropout_rate` must be a number in \[0, 1\)"),
    (dict(output_stride=4), r"`output_stride` must be one of \(8, 16, 32\)"),
    (dict(return_endpoints=True), r"needs `include_top=False`"),
    (dict(return_endpoints=True, include_top=False, pooling="avg"), r"leave `pooling=None`"),
    (dict(input_tensor=[1, 2]), r"`input_tensor` must be a Keras tensor"),
    (dict(input_tensor=keras.Input((64, 64, 3)), input_shape=(96, 96, 3)), r"disagrees with `input_tensor`"),
])
@pytest.mark.parametrize("name", ["v1", "v3_small"])
def test_bad_arguments_raise_early_value_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilenet_tf.build(name, **kwargs)


def test_depth_multiplier_validated():
    with pytest.raises(ValueError, match=r"`depth_multiplier` must be an integer >= 1; got 0.5"):
        mobilenet_tf.build("v1", depth_multiplier=0.5)
