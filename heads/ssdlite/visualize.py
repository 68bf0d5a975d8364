"""A PNG grid of evaluation images with ground-truth boxes (white, dashed) and
detections (coloured by class, labelled with class name and score)."""

import numpy as np


def save_grid(images, ground_truth, detections, class_names, path, score_threshold=0.3, columns=4, max_images=8):
    """Draw up to ``max_images`` images.

    Args:
        images: (N, H, W, 3) in [0, 255].
        ground_truth: {"boxes": (N, M, 4) normalised, "classes": (N, M), "valid": (N, M)}.
        detections: ``postprocess`` output: boxes (N, K, 4), scores, classes, num_detections.
        class_names: names by class id (0 = background).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(len(images), max_images)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= count:
            continue
        height, width = images[index].shape[:2]
        axis.imshow(np.clip(images[index], 0, 255).astype(np.uint8))
        for box, valid in zip(ground_truth["boxes"][index], ground_truth["valid"][index]):
            if valid:
                _draw(axis, plt, box, height, width, "white", "--")
        for k in range(int(detections["num_detections"][index])):
            score, cls = float(detections["scores"][index][k]), int(detections["classes"][index][k])
            if score < score_threshold:
                continue
            colour = colours(cls % 10)
            ymin, xmin = _draw(axis, plt, detections["boxes"][index][k], height, width, colour, "-")
            name = class_names[cls] if cls < len(class_names) else str(cls)
            axis.text(xmin, ymin, f"{name} {score:.2f}", color="black", fontsize=6, va="bottom",
                      bbox=dict(facecolor=colour, alpha=0.8, pad=1, linewidth=0))
    fig.suptitle(f"ground truth dashed white; detections with score >= {score_threshold}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _draw(axis, plt, box, height, width, colour, style):
    ymin, xmin, ymax, xmax = np.asarray(box, float) * [height, width, height, width]
    axis.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, edgecolor=colour,
                                 linestyle=style, linewidth=1.2))
    return ymin, xmin
