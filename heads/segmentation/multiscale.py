"""Multi-scale + left-right flip inference, the V2 paper Table 7's "MF" (DeepLab's
``eval_scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`` with ``add_flipped_images``).

As DeepLab's ``predict_labels_multi_scale`` (research/deeplab/model.py): the image is
resized to each scale (and flipped), the logits resized back to the image size, and the
softmax probabilities averaged over every scale and flip; argmax gives the labels.
Each scale runs its own copy of the model (static sizes: the "paper" pooling kernel
and exact upsampling are fixed at build time), built once per size and given the
weights of the model being evaluated.

    >>> mf = MultiScaleFlip(lambda h, w: build_segmentation("v2", "raspp", 21, (h, w, 3), feature="C5_block"))
    >>> mf.set_weights(trained)
    >>> probabilities = mf(images)          # (B, H, W, 21)
"""

import tensorflow as tf

DEEPLAB_EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def scaled_size(size, scale, multiple):
    """``size * scale`` rounded to a multiple of ``multiple`` (the output stride), at least 2 of it."""
    return max(2 * multiple, int(round(size * scale / multiple)) * multiple)


class MultiScaleFlip:
    """Averaged softmax probabilities over scales and flips; a callable model.

    Args:
        build: ``(height, width) -> keras.Model`` of one architecture (the weights
            of any of them fit the others).
        scales: image scales (DeepLab's MF: ``DEEPLAB_EVAL_SCALES``).
        flip: add the left-right flipped image at each scale.
        multiple: scaled sizes are rounded to multiples of this (the output stride).
    """

    def __init__(self, build, scales=DEEPLAB_EVAL_SCALES, flip=True, multiple=16):
        if not scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in scales):
            raise ValueError(f"`scales` must be positive numbers, e.g. {DEEPLAB_EVAL_SCALES}; got {scales!r}.")
        self.build, self.scales, self.flip, self.multiple = build, tuple(scales), flip, multiple
        self.models, self.weights = {}, None

    def sizes(self, height, width):
        """The (height, width) each scale runs at."""
        return [(scaled_size(height, s, self.multiple), scaled_size(width, s, self.multiple)) for s in self.scales]

    def prepare(self, height, width):
        """Build the models for (height, width) images now (before tracing a ``tf.function`` that calls this)."""
        for size in self.sizes(height, width):
            if size not in self.models:
                self.models[size] = self.build(*size)
                if self.weights is not None:
                    self.models[size].set_weights(self.weights)
        return self

    def set_weights(self, model):
        """Give every scale ``model``'s weights (eagerly; models built later get them too)."""
        self.weights = model.get_weights()
        for scaled in self.models.values():
            scaled.set_weights(self.weights)
        return self

    def __call__(self, images, training=False):
        """images: (B, H, W, 3) with static H, W -> (B, H, W, classes) probabilities."""
        height, width = images.shape[1], images.shape[2]
        self.prepare(height, width)
        images = tf.cast(images, tf.float32)
        total, count = 0.0, 0
        for size in self.sizes(height, width):
            scaled = tf.image.resize(images, size, method="bilinear")
            for flipped in ((False, True) if self.flip else (False,)):
                logits = self.models[size](tf.reverse(scaled, [2]) if flipped else scaled, training=False)
                logits = tf.reverse(logits, [2]) if flipped else logits
                logits = tf.image.resize(tf.cast(logits, tf.float32), (height, width), method="bilinear")
                total += tf.nn.softmax(logits)
                count += 1
        return total / count
