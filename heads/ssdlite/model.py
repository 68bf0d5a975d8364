"""SSD detectors on a MobileNet backbone: SSDLite (depthwise-separable extra layers
and predictors; MobileNetV2 paper 6.2, MobileNetV3 paper 6.2, the TF Object
Detection API's ``ssdlite_mobilenet_v3_large_320x320_coco.config``) and SSD 300
(regular convolutions; MobileNetV1 paper 4.6 / Table 13, the TF OD API's
``ssd_mobilenet_v1_coco.config``). One meta-architecture, as in the TF OD API,
where the two differ only in ``use_depthwise``:

    C4_expand / C4 (stride 16) -----------------------------------> predictor 1
    C5 (stride 32) -----------------------------------------------> predictor 2
      -> extra layer, d = 512 ------------------------------------> predictor 3
      -> ... d = 256, 256, 128 -----------------------------------> predictors 4-6
    SSDLite extra layer: 1x1 conv d/2 -> 3x3 depthwise /2 -> 1x1 conv d
    SSD extra layer:     1x1 conv d/2 -> 3x3 conv /2, d
    SSDLite predictor:   3x3 depthwise + BN + ReLU6 -> 1x1 conv (boxes x 4 | boxes x classes)
    SSD predictor:       1x1 conv (the config's kernel_size 1, no layer before it)

The model outputs ``{"boxes": (B, A, 4) codes, "classes": (B, A, num_classes)
logits}`` over all A anchors (``anchors.generate`` order); column 0 is the
background class, as in the TF OD API and torchvision. Both use the same anchors
(the two configs' ``ssd_anchor_generator`` blocks are identical), box coder,
matcher, data pipeline and postprocess.
"""

import mobilenet_tf
from mobilenet_tf import blocks
from mobilenet_tf._keras import keras, layers
from mobilenet_tf.heads.ssdlite import anchors as anchors_lib
from mobilenet_tf import walkers

EXTRA_DEPTHS = (512, 256, 256, 128)
# The stride-16 map: the expansion of the first stride-32 block (V2/V3, the TF OD API's
# "layer_15/expansion_output"), else the last stride-16 output (V1's Conv2d_11_pointwise).
FIRST_MAP_ENDPOINTS = ("C4_expand", "C4")
LAST_MAP_ENDPOINT = "C5"  # stride 32
CLASS_BIAS_INIT = -4.6  # class_prediction_bias_init: sigmoid(-4.6) = 0.01 prior
# Training settings of the reference config, set on the whole model (backbone too)
# by ``build_ssdlite`` through ``walkers.add_weight_decay`` / ``configure_batchnorm``.
WEIGHT_DECAY = 4e-5  # l2_regularizer weight (both configs)
BN_MOMENTUM = 0.97  # batch_norm decay (epsilon 1e-3 is blocks.BN_EPSILON)
SSD_BN_MOMENTUM = 0.9997  # ssd_mobilenet_v1_coco.config's batch_norm decay
SSD_PREDICTOR_KERNEL = 1  # ssd_mobilenet_v1_coco.config: convolutional_box_predictor.kernel_size
HEADS = ("ssdlite", "ssd")


def extra_layers(x, depths=EXTRA_DEPTHS, depthwise=True):
    """The extra feature maps, each half the previous one's size (every conv + BN + ReLU6).

    SSDLite (``depthwise``): [1x1 d/2, 3x3 depthwise /2, 1x1 d] per depth; SSD: [1x1
    d/2, 3x3 /2 d] (the TF OD API's ``multi_resolution_feature_maps`` with
    ``use_depthwise`` true / false: "Conv2d_N_1x1_{d/2}", "Conv2d_N_3x3_s2_{d}").
    """
    maps = []
    for i, depth in enumerate(depths, start=1):
        name = f"extra{i}"
        x = blocks.conv_bn_act(x, depth // 2, 1, 1, "relu6", f"{name}_reduce", f"{name}_reduce_bn",
                               f"{name}_reduce_relu6")
        if depthwise:
            x = blocks.depthwise_bn_act(x, 3, 2, 1, "relu6", f"{name}_dw", f"{name}_dw_bn", f"{name}_dw_relu6")
            x = blocks.conv_bn_act(x, depth, 1, 1, "relu6", f"{name}_expand", f"{name}_expand_bn",
                                   f"{name}_expand_relu6")
        else:
            x = blocks.conv_bn_act(x, depth, 3, 2, "relu6", f"{name}_conv", f"{name}_conv_bn", f"{name}_conv_relu6")
        maps.append(x)
    return maps


def predictor(x, boxes_per_location, outputs_per_box, name, bias_init=0.0, depthwise=True):
    """(B, H, W, C) -> (B, H * W * boxes, outputs). SSDLite (``depthwise``): 3x3
    depthwise + BN + ReLU6, then a 1x1 conv; SSD: one ``SSD_PREDICTOR_KERNEL`` conv."""
    y = x
    if depthwise:
        y = blocks.depthwise_bn_act(y, 3, 1, 1, "relu6", f"{name}_dw", f"{name}_dw_bn", f"{name}_dw_relu6")
    y = layers.Conv2D(boxes_per_location * outputs_per_box, 1 if depthwise else SSD_PREDICTOR_KERNEL,
                      padding="same", name=name + "_conv", bias_initializer=keras.initializers.Constant(bias_init))(y)
    return layers.Reshape((-1, outputs_per_box), name=name + "_flat")(y)


def build_ssdlite(backbone="v3_large", num_classes=91, input_size=320, alpha=None, reduced_tail=None,
                  anchor_spec=anchors_lib.AnchorSpec(), include_preprocessing=True, backbone_weights=None,
                  weight_decay=WEIGHT_DECAY, bn_momentum=BN_MOMENTUM, name=None):
    """SSDLite on a registry backbone (the ``ssdlite_mobilenet_v3_large_320x320_coco`` design).

    Args:
        backbone: a registry name with stride-16 and stride-32 endpoints (checked
            from its feature information): v2, v3_large, v3_small (first map
            "C4_expand") and v1 ("C4"), any alpha; ShuffleNet and Xception ("C4").
        num_classes: class logits including the background column 0 (91 for COCO).
        input_size: square input side (320 in the reference config).
        alpha: backbone width multiplier (families that take one; None = 1.0).
        reduced_tail: halve the backbone's last stage (the V3 paper's "dagger"
            rows); None = the registry record's default (yes for V3, no for
            V1/V2; families without a reduced tail accept only None / False).
        anchor_spec: ``anchors.AnchorSpec``.
        backbone_weights: None, "imagenet" or a file.
        weight_decay: L2 on every conv kernel except depthwise (the reference
            config's 4e-5; 0 = none), as ``model.losses`` for ``fit``.
        bn_momentum: momentum of every BatchNormalization (the config's decay 0.97).

    Returns:
        ``keras.Model``: (B, S, S, 3) pixels in [0, 255] -> {"boxes": (B, A, 4),
        "classes": (B, A, num_classes)}, float32. ``model.anchors`` is not set;
        use ``anchors_for(model)``.
    """
    return build_detector("ssdlite", backbone, num_classes, input_size, alpha, reduced_tail, anchor_spec,
                          include_preprocessing, backbone_weights, weight_decay, bn_momentum, name)


def build_ssd(backbone="v1", num_classes=91, input_size=300, alpha=None, reduced_tail=None,
              anchor_spec=anchors_lib.AnchorSpec(), include_preprocessing=True, backbone_weights=None,
              weight_decay=WEIGHT_DECAY, bn_momentum=SSD_BN_MOMENTUM, name=None):
    """SSD 300 with regular convolutions: the MobileNetV1 paper's Table 13 detector,
    as the TF OD API's ``ssd_mobilenet_v1_coco.config`` and
    ``ssd_mobilenet_v1_feature_extractor.py`` build it.

    What comes from where: feature maps "Conv2d_11_pointwise" (our V1 "C4", stride
    16) and "Conv2d_13_pointwise" ("C5", stride 32) plus four extra layers of depth
    512, 256, 256, 128 (the extractor's ``feature_map_layout``), each a 1x1 conv to
    d/2 and a 3x3 stride-2 conv to d with BN + ReLU6 (``use_depthwise: false``);
    box and class predictors are single 1x1 convolutions
    (``convolutional_box_predictor`` with ``kernel_size: 1``,
    ``num_layers_before_predictor: 0``, no class-bias prior); 300x300 input
    (``fixed_shape_resizer``); the same ``ssd_anchor_generator`` as SSDLite (6
    layers, scales 0.2-0.95, ratios 1, 2, 1/2, 3, 1/3, 3 boxes in the lowest
    layer); L2 4e-5 and BN decay 0.9997 (``conv_hyperparams``). Its loss is
    ``losses.ClassLoss("sigmoid_hard_negative_mining")`` (the config's
    ``weighted_sigmoid`` + ``hard_example_miner``, 3 negatives per positive).

    Same arguments and outputs as ``build_ssdlite``; any backbone with stride-16 and
    stride-32 maps (V2/V3 use the stride-16 "C4_expand", like the TF OD API's
    ``ssd_mobilenet_v2``). At 300 with 91 classes on V1 1.0 it has 6.79M conv /
    dense parameters and 1.24B multiply-adds (Table 13: 6.8M, 1.2B).

    Why a builder of its own rather than a flag of ``build_ssdlite``: the two are one
    meta-architecture (``build_detector(head, ...)``, as the TF OD API's
    ``use_depthwise``), but its defaults differ (backbone, input size, BN decay) and
    so does its loss, and ``build_ssd()`` alone gives Table 13's model.
    """
    return build_detector("ssd", backbone, num_classes, input_size, alpha, reduced_tail, anchor_spec,
                          include_preprocessing, backbone_weights, weight_decay, bn_momentum, name)


def build_detector(head, backbone, num_classes, input_size, alpha=None, reduced_tail=None,
                   anchor_spec=anchors_lib.AnchorSpec(), include_preprocessing=True, backbone_weights=None,
                   weight_decay=WEIGHT_DECAY, bn_momentum=BN_MOMENTUM, name=None):
    """``build_ssdlite`` (``head="ssdlite"``) or ``build_ssd`` (``head="ssd"``); see those."""
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}; got {head!r}.")
    depthwise = head == "ssdlite"
    mobilenet_tf.registry.get_entry(backbone)  # unknown name -> ValueError, first
    if num_classes < 2:
        raise ValueError(f"`num_classes` counts the background column and must be >= 2; got {num_classes}.")
    if not isinstance(input_size, int) or input_size < 64:
        raise ValueError(f"`input_size` must be an integer >= 64 (the six maps need it); got {input_size!r}.")
    features, info = mobilenet_tf.registry.build_features(
        backbone, alpha=alpha, reduced_tail=reduced_tail, input_shape=(input_size, input_size, 3),
        include_preprocessing=include_preprocessing, weights=backbone_weights)
    # The endpoints' strides come from the registry's feature information.
    first = next((key for key in FIRST_MAP_ENDPOINTS if key in info and info[key].stride == 16), None)
    last = LAST_MAP_ENDPOINT if LAST_MAP_ENDPOINT in info and info[LAST_MAP_ENDPOINT].stride == 32 else None
    if first is None or last is None:
        strides = ", ".join(f"{key} (stride {feature.stride})" for key, feature in info.items())
        raise ValueError(f"{'SSDLite' if depthwise else 'SSD'} needs stride-16 and stride-32 feature maps "
                         f"({'/'.join(FIRST_MAP_ENDPOINTS)} and "
                         f"{LAST_MAP_ENDPOINT}); {backbone!r} has no {'stride-32' if first else 'stride-16'} map: "
                         f"its endpoints are {strides}. Use v1, v2, v3_large or v3_small (any alpha), or another "
                         "backbone with a stride-32 stage (ShuffleNet, Xception).")
    maps = [features.output[first], features.output[last]]
    maps += extra_layers(maps[-1], depthwise=depthwise)
    per_location = anchors_lib.anchors_per_location(anchor_spec)
    if len(per_location) != len(maps):
        raise ValueError(f"the anchor spec has {len(per_location)} layers; the detector has {len(maps)} feature maps.")
    boxes = [predictor(m, a, 4, f"box_predictor{i}", depthwise=depthwise)
             for i, (m, a) in enumerate(zip(maps, per_location))]
    classes = [predictor(m, a, num_classes, f"class_predictor{i}", CLASS_BIAS_INIT if depthwise else 0.0,
                         depthwise=depthwise) for i, (m, a) in enumerate(zip(maps, per_location))]
    outputs = {
        "boxes": layers.Concatenate(axis=1, name="boxes", dtype="float32")(boxes),
        "classes": layers.Concatenate(axis=1, name="classes", dtype="float32")(classes),
    }
    model = keras.Model(features.input, outputs, name=name or f"{head}_{backbone}_{input_size}")
    walkers.add_weight_decay(model, weight_decay)
    walkers.configure_batchnorm(model, momentum=bn_momentum)
    return model


def feature_map_sizes(model):
    """(height, width) of each predictor's feature map."""
    sizes = []
    for i in range(len(anchors_lib.box_specs())):
        shape = model.get_layer(f"box_predictor{i}_conv").input.shape
        sizes.append((shape[1], shape[2]))
    return sizes


def anchors_for(model, anchor_spec=anchors_lib.AnchorSpec()):
    """The (A, 4) anchors matching ``model``'s outputs."""
    return anchors_lib.generate(feature_map_sizes(model), anchor_spec)


__all__ = ["build_ssdlite", "build_ssd", "build_detector", "anchors_for", "feature_map_sizes", "extra_layers",
           "predictor"]
