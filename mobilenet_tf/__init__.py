"""MobileNet V1/V2/V3/V4 for Keras, with the papers' downstream systems.

>>> import mobilenet_tf
>>> model = mobilenet_tf.build("v3_small", alpha=0.75)
>>> print(mobilenet_tf.profile(model))

Every registry name is one ``registry.Variant`` record, registered below: the
builder, the arguments the name fixes, its options, keras.applications' published
weights, the paper's rows of the zoo table and its endpoints' feature information.
"""

from mobilenet_tf import mobilenet_v1 as _v1, mobilenet_v2 as _v2, mobilenet_v3 as _v3, mobilenet_v4 as _v4
from mobilenet_tf import registry
from mobilenet_tf import shufflenet as _shufflenet, squeezenet as _squeezenet, xception as _xception
from mobilenet_tf.mobilenet_v1 import mobilenet_v1
from mobilenet_tf.mobilenet_v2 import mobilenet_v2
from mobilenet_tf.mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from mobilenet_tf.mobilenet_v4 import mobilenet_v4
from mobilenet_tf.profile import profile
from mobilenet_tf.registry import PublishedWeights, build, build_features, list_models, options_for, paper
from mobilenet_tf.shufflenet import shufflenet_v1, shufflenet_v2
from mobilenet_tf.squeezenet import squeezenet
from mobilenet_tf.xception import xception

__version__ = "0.1.0"

# The MobileNets: width multiplier alpha, a reduced tail (the V3 paper's heads use it
# for V3), keras.applications' ImageNet weights, the papers' multiply-adds and params.
registry.register_variant(
    "v1", mobilenet_v1, "MobileNetV1 (Howard et al. 2017, Table 1)", family="mobilenet_v1",
    width_argument="alpha", reduced_tail=False, features=_v1.feature_info,
    published=PublishedWeights("MobileNet", (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224),
                               takes_depth_multiplier=True),
    paper_rows=(paper(1.0, 224, 569, 4.2, "V1 Table 6"), paper(0.75, 224, 325, 2.6, "V1 Table 6"),
                paper(0.5, 224, 149, 1.3, "V1 Table 6"), paper(0.25, 224, 41, 0.5, "V1 Table 6"),
                paper(1.0, 192, 418, 4.2, "V1 Table 7"), paper(1.0, 160, 290, 4.2, "V1 Table 7"),
                paper(1.0, 128, 186, 4.2, "V1 Table 7")),
)
registry.register_variant(
    "v2", mobilenet_v2, "MobileNetV2 (Sandler et al. 2018, Table 2)", family="mobilenet_v2",
    width_argument="alpha", reduced_tail=False, features=_v2.feature_info,
    published=PublishedWeights("MobileNetV2", (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)),
    paper_rows=(paper(1.4, 224, 585, 6.9, "V2 Table 4", check_params=False,
                      note="paper prints 6.9M params; TF-slim's 1.4 checkpoint has 6.06M, as counted here"),
                paper(1.0, 224, 300, 3.4, "V2 Table 4, V3 Table 3"), paper(0.35, 224, 59.2, 1.6, "V3 Table 3")),
)
_V3_PAPER = {
    "v3_large": (paper(1.0, 224, 219, 5.4, "V3 Table 3"), paper(0.75, 224, 155, 4.0, "V3 Table 3")),
    "v3_small": (paper(1.0, 224, 56, 2.5, "V3 Table 3"), paper(0.75, 224, 44, 2.0, "V3 Table 3")),
    "v3_large_minimalistic": (paper(1.0, 224, 209, 3.9, "TF-slim"),),
    "v3_small_minimalistic": (paper(1.0, 224, 65, 2.0, "TF-slim", check_madds=False,
                                    note="slim counts V3-Small at 66M where the final paper says 56M; "
                                         "its 65M for minimalistic uses that count"),),
}
for _minimal in (False, True):
    for _size, _builder, _features, _table in (
            ("large", mobilenet_v3_large, _v3.feature_info_large, "Table 1"),
            ("small", mobilenet_v3_small, _v3.feature_info_small, "Table 2")):
        _name = f"v3_{_size}" + ("_minimalistic" if _minimal else "")
        registry.register_variant(
            _name, _builder,
            f"MobileNetV3-{_size.title()} minimalistic (3x3, ReLU, no SE)" if _minimal
            else f"MobileNetV3-{_size.title()} (Howard et al. 2019, {_table})",
            fixed=dict(minimalistic=True) if _minimal else None, family="mobilenet_v3",
            width_argument="alpha", reduced_tail=True, features=_features,
            published=PublishedWeights(f"MobileNetV3{_size.title()}", (1.0,) if _minimal else (0.75, 1.0)),
            paper_rows=_V3_PAPER[_name],
        )

# MobileNetV4: no width multiplier, no reduced tail. Params: Model Garden's builder at 224
# (trainable, 1000 classes) = timm's; MACs: the paper's, at each variant's native resolution.
_V4_PAPER = {
    "conv_small": (3.774024, 200), "conv_medium": (9.715512, 1000), "conv_large": (32.590864, 5900),
    "hybrid_medium": (11.074648, 1200), "hybrid_large": (37.764624, 7200),
}
for _variant, (_params, _madds) in _V4_PAPER.items():
    registry.register_variant(
        f"v4_{_variant}", mobilenet_v4,
        f"MobileNetV4 {_variant.replace('_', '-').title()} (Qin et al. 2024; Model Garden's table)",
        fixed=dict(variant=_variant), family="mobilenet_v4", features=_v4.feature_info,
        paper_rows=(paper(1.0, _v4.NATIVE_RESOLUTION[_variant], _madds, _params, "V4 paper / Model Garden",
                          check_madds=False, check_params=False,
                          note="the paper rounds MACs to 0.1G and counts params with BN; exact sizes against "
                               "Model Garden and timm: tests/test_mobilenet_v4.py"),))

# The other families: widths in their names or none, no reduced tail.
for _version in ("1_0", "1_1"):
    registry.register_variant(
        f"squeezenet{_version}", squeezenet, f"SqueezeNet {_version.replace('_', '.')} (Iandola et al. 2016)",
        fixed=dict(version=_version), family="squeezenet", features=_squeezenet.feature_info)
for _groups in (1, 2, 3, 4, 8):
    registry.register_variant(
        f"shufflenet_v1_g{_groups}", shufflenet_v1, f"ShuffleNet V1, {_groups} groups (Zhang et al. 2017, Table 1)",
        fixed=dict(groups=_groups), family="shufflenet_v1", features=_shufflenet.feature_info_v1)
for _width in (0.5, 1.0, 1.5, 2.0):
    registry.register_variant(
        f"shufflenet_v2_x{_width:.1f}".replace(".", "_"), shufflenet_v2,
        f"ShuffleNet V2 {_width:g}x (Ma et al. 2018, Table 5)", fixed=dict(width=_width), family="shufflenet_v2",
        features=_shufflenet.feature_info_v2)
registry.register_variant(
    "xception", xception, "Xception (Chollet 2017, Figure 5)", family="xception", features=_xception.feature_info,
    published=PublishedWeights("Xception", sizes=(299,), takes_alpha=False))
del _V3_PAPER, _V4_PAPER, _variant, _params, _madds, _minimal, _size, _builder, _features, _table, _name
del _version, _groups, _width

__all__ = [
    "build", "build_features", "options_for", "list_models", "profile", "mobilenet_v1", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v4", "squeezenet", "shufflenet_v1", "shufflenet_v2",
    "xception", "__version__",
]
