"""The papers' segmentation tables as data, and MAdds counted the way the V2 paper counts them.

``V3_TABLE_7``: the V3 paper's Cityscapes rows 1-11 (1024x2048, 19 classes, output
stride 16; rows 1-8 its R-ASPP / LR-ASPP comparison); ``V2_TABLE_7``: the V2 paper's PASCAL VOC rows (512x512 nominal, 21 classes) for
MobileNet V1 and V2* (the 320-channel map). Each row: the ``build_segmentation``
arguments and the paper's (params, MAdds).

``deeplab_madds``: the V2 paper's MAdds are DeepLab's TensorFlow graph on its 513x513
crop (maps of 33x33 at output stride 16, 65x65 at 8, where our 512 gives 32 and 64),
where an atrous convolution runs as space-to-batch on the map padded to a multiple of
its rate (``tf.nn.atrous_conv2d``: a rate-18 conv on 33x33 computes 36x36 outputs), and
"MF" is the sum over DeepLab's six scales and their flips. Counted this way, our models
give the paper's numbers (README "Segmentation sizes"); counted directly at 512, ASPP
has 13-17% fewer MAdds than the paper prints.
"""

import dataclasses
import math

import mobilenet_tf
from mobilenet_tf.heads.segmentation import multiscale


@dataclasses.dataclass(frozen=True)
class PaperRow:
    label: str
    options: dict  # build_segmentation keyword arguments (besides num_classes / input_shape)
    params: float
    madds: float
    multi_scale_flip: bool = False


V3_TABLE_7 = tuple(PaperRow(label, dict(backbone=backbone, alpha=alpha, head=head, reduced_tail=rf2, filters=filters,
                                        feature="C5_block" if backbone == "v2" else None), params, madds)
                   for label, backbone, alpha, rf2, head, filters, params, madds in (
    ("1: V2, R-ASPP 256", "v2", None, False, "raspp", 256, 2.11e6, 21.29e9),
    ("2: V2 RF2, R-ASPP 256", "v2", None, True, "raspp", 256, 1.15e6, 13.68e9),
    ("3: V2 RF2, LR-ASPP 256", "v2", None, True, "lraspp", 256, 1.02e6, 12.83e9),
    ("4: V2 RF2, LR-ASPP 128", "v2", None, True, "lraspp", 128, 0.98e6, 12.57e9),
    ("5: V3, R-ASPP 256", "v3_large", None, False, "raspp", 256, 3.60e6, 18.43e9),
    ("6: V3 RF2, R-ASPP 256", "v3_large", None, True, "raspp", 256, 1.76e6, 11.24e9),
    ("7: V3 RF2, LR-ASPP 256", "v3_large", None, True, "lraspp", 256, 1.63e6, 10.33e9),
    ("8: V3 RF2, LR-ASPP 128", "v3_large", None, True, "lraspp", 128, 1.51e6, 9.74e9),
    ("9: V2 0.5 RF2, LR-ASPP 128", "v2", 0.5, True, "lraspp", 128, 0.28e6, 4.00e9),
    ("10: V2 0.35 RF2, LR-ASPP 128", "v2", 0.35, True, "lraspp", 128, 0.16e6, 2.54e9),
    ("11: V3-Small RF2, LR-ASPP 128", "v3_small", None, True, "lraspp", 128, 0.47e6, 2.90e9),
))
V3_TABLE_7_INPUT, V3_TABLE_7_CLASSES = (1024, 2048, 3), 19

V2_TABLE_7 = tuple(PaperRow(label, dict(backbone=backbone, head=head, output_stride=output_stride,
                                        feature="C5_block" if backbone == "v2" else None, pooling="global"),
                            params, madds, mf)
                   for label, backbone, output_stride, head, mf, params, madds in (
    ("V1, OS 16, ASPP", "v1", 16, "aspp", False, 11.15e6, 14.25e9),
    ("V1, OS 8, ASPP, MF", "v1", 8, "aspp", True, 11.15e6, 941.9e9),
    ("V2*, OS 16, ASPP", "v2", 16, "aspp", False, 4.52e6, 5.8e9),
    ("V2*, OS 8, ASPP, MF", "v2", 8, "aspp", True, 4.52e6, 387e9),
    ("V2*, OS 16", "v2", 16, "raspp", False, 2.11e6, 2.75e9),
    ("V2*, OS 8, MF", "v2", 8, "raspp", True, 2.11e6, 152.6e9),
))
V2_TABLE_7_INPUT, V2_TABLE_7_CLASSES, DEEPLAB_CROP = (512, 512, 3), 21, 513


def deeplab_madds(model, crop=DEEPLAB_CROP, scales=(1.0,), flip=False):
    """MAdds of ``model`` (built at a multiple of its output stride) as DeepLab's graph
    computes them on a ``crop`` x ``crop`` image at each of ``scales`` (x2 with ``flip``).

    Each layer's count is scaled from its map to DeepLab's map at that layer's stride
    (``(size - 1) // stride + 1``, "SAME" padding), and a dilated convolution's to the
    map padded to a multiple of its rate (space-to-batch)."""
    size = model.input_shape[1]
    # (MAdds, output height at `size`, dilation rate) of every counted layer
    layers = [(row.madds, row.output_shape[1], getattr(model.get_layer(row.name), "dilation_rate", (1, 1))[0])
              for row in mobilenet_tf.profile(model).layers if row.madds]
    total = 0
    for scale in scales:
        image = int((crop - 1) * scale + 1)  # DeepLab's scale_dimension
        for madds, height, rate in layers:
            deeplab = (image - 1) // (size // height) + 1  # the map at this layer's stride
            computed = math.ceil(deeplab / rate) * rate
            total += madds * (computed / height) ** 2
    return total * (2 if flip else 1)


def mf_scales(row):
    """The scales a row's MAdds sum over: DeepLab's six for MF rows, else 1.0."""
    return multiscale.DEEPLAB_EVAL_SCALES if row.multi_scale_flip else (1.0,)
