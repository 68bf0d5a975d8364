"""Model walkers: visit every layer of a model (nested models included) and set what
training and deployment both need (weight decay, BatchNormalization settings).

They sit below both ``mobilenet_tf.training`` and the deployment modules (export,
benchmark, compress), which never import the training package.
"""

from mobilenet_tf._keras import keras


def add_weight_decay(model, weight_decay):
    """L2 penalty ``weight_decay * sum(w^2) / 2`` on every conv and dense kernel of
    ``model`` (nested models included), none on depthwise kernels, BN or biases.

    Returns the number of kernels regularised.
    """
    if weight_decay <= 0:
        return 0
    regularizer = keras.regularizers.L2(weight_decay / 2)
    count = 0
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel.regularizer = regularizer
            count += 1
    return count


def configure_batchnorm(model, momentum=None, synchronized=None, epsilon=None):
    """Set the momentum, cross-replica synchronisation and/or epsilon of every
    BatchNormalization in ``model`` (before training; all are read at call time).

    The backbones use the V3 paper's momentum 0.99; a short run (a few hundred
    steps) evaluates badly with it, since the moving statistics still remember
    the initial weights, so the synthetic recipes use 0.9. ``synchronized=True``
    all-reduces batch moments over replicas (SyncBN), so every replica and worker
    keeps the same moving statistics.

    Returns the number of layers changed.
    """
    count = 0
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            if momentum is not None:
                layer.momentum = momentum
            if synchronized is not None:
                layer.synchronized = synchronized
            if epsilon is not None:
                layer.epsilon = epsilon
            count += 1
    return count


def flat_layers(model):
    """Every layer of ``model``, nested models' layers included (not the models)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer
