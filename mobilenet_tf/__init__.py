"""MobileNet V1/V2/V3 for Keras, with the papers' downstream systems.

>>> import mobilenet_tf
>>> model = mobilenet_tf.build("v3_small", alpha=0.75)
>>> print(mobilenet_tf.profile(model))
"""

from mobilenet_tf import registry
from mobilenet_tf.mobilenet_v1 import mobilenet_v1
from mobilenet_tf.mobilenet_v2 import mobilenet_v2
from mobilenet_tf.mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from mobilenet_tf.profile import profile
from mobilenet_tf.registry import build, list_models

__version__ = "0.1.0"

registry.register("v1", "MobileNetV1 (Howard et al. 2017, Table 1)")(mobilenet_v1)
registry.register("v2", "MobileNetV2 (Sandler et al. 2018, Table 2)")(mobilenet_v2)
registry.register("v3_large", "MobileNetV3-Large (Howard et al. 2019, Table 1)")(mobilenet_v3_large)
registry.register("v3_small", "MobileNetV3-Small (Howard et al. 2019, Table 2)")(mobilenet_v3_small)
registry.register("v3_large_minimalistic", "MobileNetV3-Large minimalistic (3x3, ReLU, no SE)",
                  minimalistic=True)(mobilenet_v3_large)
registry.register("v3_small_minimalistic", "MobileNetV3-Small minimalistic (3x3, ReLU, no SE)",
                  minimalistic=True)(mobilenet_v3_small)

__all__ = [
    "build", "list_models", "profile", "mobilenet_v1", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "__version__",
]
