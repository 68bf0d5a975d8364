"""Channel shuffle and channel split (ShuffleNet V1/V2): the only custom layers.

No stock Keras layer permutes or splits channels at unknown spatial sizes
(``Reshape`` needs static height and width), so these two small weightless
layers do it with TensorFlow ops. They work in Keras 3 and tf_keras, are
registered for serialisation (``keras.models.load_model`` needs
``import mobilenet_tf``, nothing else), and convert to TFLite RESHAPE /
TRANSPOSE / SPLIT ops.
"""

import tensorflow as tf

from mobilenet_tf._keras import keras, layers

_register = keras.saving.register_keras_serializable(package="mobilenet_tf")


@_register
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle (ShuffleNet paper Figure 1): (B, H, W, C) ->
    (B, H, W, C) with channel ``g * (C // groups) + i`` moved to ``i * groups + g``,
    so each group of the next grouped conv sees channels from every group."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        # Static sizes where known (the batch as -1): constant reshapes, which XNNPACK
        # runs; shapes read from the tensor (SHAPE, STRIDED_SLICE, PACK) it does not,
        # and they split ShuffleNet V1 g3's TFLite file into 33 XNNPACK partitions.
        _, height, width, channels = x.shape
        if height is None or width is None:
            dynamic = tf.shape(x)
            height, width = (dynamic[1] if height is None else height), (dynamic[2] if width is None else width)
        x = tf.reshape(x, [-1, height, width, self.groups, channels // self.groups])
        x = tf.transpose(x, [0, 1, 2, 4, 3])
        return tf.reshape(x, [-1, height, width, channels])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@_register
class ChannelSplit(layers.Layer):
    """ShuffleNet V2's channel split (V2 paper Figure 3c): (B, H, W, C) -> two
    tensors (B, H, W, C // 2), the first and the second half of the channels."""

    def call(self, x):
        first, second = tf.split(x, 2, axis=-1)
        return [first, second]

    def compute_output_shape(self, input_shape):
        half = tuple(input_shape[:-1]) + (input_shape[-1] // 2,)
        return [half, half]
