"""SSD anchors, as the TF Object Detection API's ``ssd_anchor_generator`` makes them.

For ``num_layers`` feature maps, scales are spread linearly from ``min_scale`` to
``max_scale``; each layer gets one box per aspect ratio at its scale plus a
square box at the geometric mean of its scale and the next one (the
"interpolated scale"); the lowest layer gets only three boxes (scale 0.1 ratio 1,
its scale with ratios 2 and 1/2). Boxes are tiled over the actual feature-map
size, so any input size works. Anchors are normalised ``[ymin, xmin, ymax, xmax]``
in the order the head's outputs flatten to: layer, row, column, box.
"""

import dataclasses
import math

import numpy as np

# ssdlite_mobilenet_v3_large_320x320_coco.config: ssd_anchor_generator.
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """The reference config's anchor settings."""

    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple = ASPECT_RATIOS
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True


def box_specs(spec=AnchorSpec()):
    """Per layer, the (scale, aspect ratio) of each box at one location."""
    n = spec.num_layers
    scales = [spec.min_scale + (spec.max_scale - spec.min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    layers = []
    for layer in range(n):
        scale, next_scale = scales[layer], scales[layer + 1]
        if layer == 0 and spec.reduce_boxes_in_lowest_layer:
            boxes = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            boxes = [(scale, ratio) for ratio in spec.aspect_ratios]
            if spec.interpolated_scale_aspect_ratio > 0:
                boxes.append((math.sqrt(scale * next_scale), spec.interpolated_scale_aspect_ratio))
        layers.append(boxes)
    return layers


def anchors_per_location(spec=AnchorSpec()):
    """Boxes per feature-map location for each layer, e.g. [3, 6, 6, 6, 6, 6]."""
    return [len(boxes) for boxes in box_specs(spec)]


def generate(feature_map_sizes, spec=AnchorSpec()):
    """All anchors for feature maps of the given (height, width) sizes.

    Returns:
        float32 (sum over layers of H * W * boxes, 4) normalised [ymin, xmin, ymax, xmax].
    """
    if len(feature_map_sizes) != spec.num_layers:
        raise ValueError(f"`feature_map_sizes` has {len(feature_map_sizes)} layers; the anchor spec has "
                         f"{spec.num_layers}.")
    out = []
    for (height, width), boxes in zip(feature_map_sizes, box_specs(spec)):
        scales = np.array([s for s, _ in boxes])
        ratios = np.sqrt(np.array([r for _, r in boxes]))
        box_h, box_w = scales / ratios, scales * ratios  # base anchor size 1 x 1
        cy = (np.arange(height) + 0.5) / height
        cx = (np.arange(width) + 0.5) / width
        cy, cx, bh = np.meshgrid(cy, cx, box_h, indexing="ij")
        _, _, bw = np.meshgrid(np.arange(height), np.arange(width), box_w, indexing="ij")
        layer = np.stack([cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], axis=-1)
        out.append(layer.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)
