"""The same builders under tf_keras (TF_USE_LEGACY_KERAS=1), as tensorflow-model-optimization needs."""

import textwrap

import pytest

import mobilenet_tf
from conftest import run_legacy_keras

# One model of each family and each builder path (V3's minimalistic blocks, V4's attention):
# the other variants of a family differ only in their table rows. (Building all 23 in both
# Keras versions took about a minute of the suite.)
NAMES = ("v1", "v2", "v3_small", "v3_small_minimalistic", "v4_conv_small", "v4_hybrid_medium", "squeezenet1_0",
         "squeezenet1_1", "shufflenet_v1_g3", "shufflenet_v2_x1_0", "xception")

SCRIPT = f"NAMES = {NAMES!r}\n" + textwrap.dedent("""
    import json, os, tempfile
    import numpy as np
    import tf_keras
    import mobilenet_tf
    from mobilenet_tf import _keras, weights
    assert _keras.keras is tf_keras, _keras.keras
    out = {"params": {}, "layer_types": set()}
    for name in NAMES:
        model = mobilenet_tf.build(name, input_shape=(96, 96, 3), classes=10)
        assert isinstance(model, tf_keras.Model)
        out["params"][name] = model.count_params()
        out["layer_types"] |= {type(l).__name__ for l in model.layers}
    feats = mobilenet_tf.build("v3_large", input_shape=(128, 128, 3), include_top=False,
                               return_endpoints=True, output_stride=16, reduced_tail=True)
    out["endpoints"] = {k: list(v.shape[1:]) for k, v in feats.output.items()}
    # tf_keras.applications' V3 builds h-sigmoid from TFOpLambda layers; ours from stock
    # layers must give the same outputs after transfer.
    source = weights.keras_application("v3_small", input_shape=(96, 96, 3), classifier_activation=None)
    ours = mobilenet_tf.build("v3_small", input_shape=(96, 96, 3), classifier_activation=None)
    weights.load_keras_applications_weights(ours, source)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    out["max_diff"] = float(np.abs(ours.predict(x, verbose=0) - source.predict(x, verbose=0)).max())
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    ours.save(path)
    reloaded = tf_keras.models.load_model(path)
    out["reload_diff"] = float(np.abs(reloaded.predict(x, verbose=0) - ours.predict(x, verbose=0)).max())
    # ShuffleNet's custom layers save and reload under tf_keras too.
    shuffle = mobilenet_tf.build("shufflenet_v2_x0_5", input_shape=(96, 96, 3), classes=10)
    shuffle.save(path)
    out["shuffle_reload_diff"] = float(np.abs(tf_keras.models.load_model(path).predict(x, verbose=0)
                                              - shuffle.predict(x, verbose=0)).max())
    out["layer_types"] = sorted(out["layer_types"])
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow(seconds=30)
def test_builders_run_under_tf_keras():
    result = run_legacy_keras(SCRIPT)
    assert sorted(result["params"]) == sorted(NAMES)
    for name, params in result["params"].items():
        assert params == mobilenet_tf.build(name, input_shape=(96, 96, 3), classes=10).count_params(), name
    assert result["endpoints"] == {"C1": [64, 64, 16], "C2": [32, 32, 24], "C3": [16, 16, 40],
                                   "C4": [8, 8, 112], "C4_expand": [8, 8, 672], "C5_block": [8, 8, 80],
                                   "C5": [8, 8, 480]}
    assert result["max_diff"] < 1e-4
    assert result["reload_diff"] < 1e-6
    assert result["shuffle_reload_diff"] < 1e-6
    # Only stock layers: nothing tensorflow-model-optimization cannot see through.
    assert not {"TFOpLambda", "Lambda", "SlicingOpLambda"} & set(result["layer_types"])
    assert {"ChannelShuffle", "ChannelSplit"} <= set(result["layer_types"])  # ShuffleNet's two custom layers
