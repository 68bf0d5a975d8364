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
from mobilenet_tf.shufflenet import shufflenet_v1, shufflenet_v2
from mobilenet_tf.squeezenet import squeezenet
from mobilenet_tf.xception import xception

__version__ = "0.1.0"

registry.register("v1", "MobileNetV1 (Howard et al. 2017, Table 1)")(mobilenet_v1)
registry.register("v2", "MobileNetV2 (Sandler et al. 2018, Table 2)")(mobilenet_v2)
registry.register("v3_large", "MobileNetV3-Large (Howard et al. 2019, Table 1)")(mobilenet_v3_large)
registry.register("v3_small", "MobileNetV3-Small (Howard et al. 2019, Table 2)")(mobilenet_v3_small)
registry.register("v3_large_minimalistic", "MobileNetV3-Large minimalistic (3x3, ReLU, no SE)",
                  minimalistic=True)(mobilenet_v3_large)
registry.register("v3_small_minimalistic", "MobileNetV3-Small minimalistic (3x3, ReLU, no SE)",
                  minimalistic=True)(mobilenet_v3_small)
for version in ("1_0", "1_1"):
    registry.register(f"squeezenet{version}", f"SqueezeNet {version.replace('_', '.')} (Iandola et al. 2016)",
                      version=version)(squeezenet)
for groups in (1, 2, 3, 4, 8):
    registry.register(f"shufflenet_v1_g{groups}", f"ShuffleNet V1, {groups} groups (Zhang et al. 2017, Table 1)",
                      groups=groups)(shufflenet_v1)
for width in (0.5, 1.0, 1.5, 2.0):
    registry.register(f"shufflenet_v2_x{width:.1f}".replace(".", "_"),
                      f"ShuffleNet V2 {width:g}x (Ma et al. 2018, Table 5)", width=width)(shufflenet_v2)
registry.register("xception", "Xception (Chollet 2017, Figure 5)")(xception)

__all__ = [
    "build", "list_models", "profile", "mobilenet_v1", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "squeezenet", "shufflenet_v1", "shufflenet_v2", "xception",
    "__version__",
]
