"""A PNG grid of images, ground truth and predictions, coloured with a palette."""

import numpy as np

from mobilenet_tf.heads.segmentation.data import IGNORE_LABEL


def palette_for(num_classes, palette=None):
    """(num_classes + 1, 3) uint8: ``palette`` (e.g. Cityscapes') or distinct hues, plus black for ignore."""
    if palette is None or len(palette) < num_classes:
        import matplotlib

        colours = matplotlib.colormaps["tab20"](np.arange(num_classes) % 20)[:, :3]
        palette = (colours * 255).astype(np.uint8)
    return np.concatenate([np.asarray(palette[:num_classes], np.uint8), np.zeros((1, 3), np.uint8)])


def colorize(label, palette):
    """(H, W) or (H, W, 1) ids -> (H, W, 3) uint8; ``IGNORE_LABEL`` is black."""
    label = np.asarray(label).reshape(np.shape(label)[:2]).astype(np.int64)
    label = np.where(label == IGNORE_LABEL, len(palette) - 1, np.clip(label, 0, len(palette) - 1))
    return palette[label]


def save_grid(images, labels, predictions, path, num_classes, palette=None, max_rows=4):
    """Rows of (image, ground truth, prediction) as a PNG.

    Args:
        images: (N, H, W, 3) [0, 255]; labels: (N, H, W, 1); predictions: (N, H, W) ids.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = palette_for(num_classes, palette)
    rows = min(len(images), max_rows)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row in range(rows):
        panels = (np.clip(images[row], 0, 255).astype(np.uint8), colorize(labels[row], colours),
                  colorize(predictions[row], colours))
        for col, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
            axes[row, col].imshow(panel)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
