"""MobileNetV4's custom layers: multi-query attention over feature maps, layer scale
and stochastic depth.

Keras' ``MultiHeadAttention`` projects a key and a value per head; Mobile MQA (V4
paper section 3.3) shares one key and one value across the heads, and runs on
(B, H, W, C) maps of any size, which ``Reshape`` cannot express (it needs static
height and width). So the attention itself (the two matmuls and the softmax) is
one small weightless layer on TensorFlow ops, and every projection around it is a
stock ``Conv2D`` / ``DepthwiseConv2D``. Keras has no layer for a learned per-channel
scale or for dropping a residual branch per example either. All three work in Keras 3
and tf_keras, are registered for serialisation (``load_model`` needs ``import
mobilenet_tf``) and convert to TFLite BATCH_MATMUL / SOFTMAX / MUL ops (stochastic
depth is the identity at inference and leaves no op).
"""

import tensorflow as tf

from mobilenet_tf._keras import keras, layers

_register = keras.saving.register_keras_serializable(package="mobilenet_tf")


@_register
class MultiQueryAttention(layers.Layer):
    """softmax(Q K^T / sqrt(key_dim)) V with ``heads`` queries and one shared key / value.

    Inputs ``[query, key, value]``: query (B, H, W, heads * key_dim) in head-major
    channel order (channel ``h * key_dim + d``), key (B, h, w, key_dim), value
    (B, h, w, value_dim) (keys and values may be downsampled: h * w positions).
    Output (B, H, W, heads * value_dim), head-major.
    """

    def __init__(self, heads, key_dim, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_dim = int(heads), int(key_dim)

    def call(self, inputs):
        query, key, value = inputs
        value_dim = value.shape[-1]
        if None in (*query.shape[1:3], *key.shape[1:3]):  # a map of unknown size: shapes at run time
            height, width = tf.shape(query)[1], tf.shape(query)[2]
        else:  # static shapes: constant RESHAPEs, which keep a TFLite graph in one XNNPACK partition
            height, width = query.shape[1], query.shape[2]
        # One batched matmul for every head: the key is shared, so the heads become rows.
        q = tf.reshape(query, [-1, height * width * self.heads, self.key_dim]) * (self.key_dim ** -0.5)
        k = tf.reshape(key, [-1, _positions(key), self.key_dim])
        v = tf.reshape(value, [-1, _positions(value), value_dim])
        attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)  # (B, H*W*heads, h*w)
        return tf.reshape(tf.matmul(attention, v), [-1, height, width, self.heads * value_dim])

    def compute_output_shape(self, input_shapes):
        query, _, value = input_shapes
        return tuple(query[:-1]) + (self.heads * value[-1],)

    def multiply_adds(self, input_shapes):
        """Q K^T and attention x V, per image (``profile`` counts them with the convolutions)."""
        query, key, value = (tuple(shape[1:]) for shape in input_shapes)
        queries = query[0] * query[1] * self.heads
        positions = key[0] * key[1]
        return queries * positions * (self.key_dim + value[-1])

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "key_dim": self.key_dim}


def _positions(x):
    """h * w of a (B, h, w, C) tensor: a number when both are known, else a tensor."""
    if None in x.shape[1:3]:
        return tf.shape(x)[1] * tf.shape(x)[2]
    return x.shape[1] * x.shape[2]


@_register
class LayerScale(layers.Layer):
    """x * gamma, one learned factor per channel (CaiT's layer scale; V4's hybrids
    start it at 1e-5 so each block begins close to the identity of its residual)."""

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_value))
        super().build(input_shape)

    def call(self, x):
        return x * tf.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@_register
class StochasticDepth(layers.Layer):
    """Adds a residual branch, dropped for a whole example with probability ``rate``
    during training (Huang et al. 2016; Model Garden's MobileNetV4 configs): inputs
    ``[shortcut, branch]`` -> shortcut + branch * keep / (1 - rate), keep ~ Bernoulli(1 - rate)
    per example; at inference shortcut + branch, like ``Add``."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"`rate` (stochastic depth) must be in [0, 1); got {rate!r}.")
        self.rate = float(rate)

    def call(self, inputs, training=None):
        shortcut, branch = inputs
        if training and self.rate > 0:
            keep = 1.0 - self.rate
            shape = tf.stack([tf.shape(branch)[0], 1, 1, 1])
            mask = tf.floor(keep + tf.random.uniform(shape, dtype=branch.dtype))
            branch = branch * mask / keep
        return shortcut + branch

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}
