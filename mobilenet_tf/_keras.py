"""The one place that chooses the Keras implementation.

TensorFlow's own rule decides: with ``TF_USE_LEGACY_KERAS`` set to ``1``/``true``
before TensorFlow is imported, ``tf_keras`` (Keras 2) is used, as
tensorflow-model-optimization requires; otherwise Keras 3. Builders import
``keras`` and ``layers`` from here, never ``import keras`` themselves, so the same
code builds the same graph in both worlds.
"""

import os

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401
else:
    import keras  # noqa: F401

layers = keras.layers
