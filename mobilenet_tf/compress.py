"""Model compression with tensorflow-model-optimization (TFMOT): magnitude pruning,
weight clustering (Deep Compression's weight sharing) and quantization-aware
training, for every model the registry builds and for the heads.

TFMOT 0.8 works only on tf_keras (Keras 2): use this module in a process that set
``TF_USE_LEGACY_KERAS=1`` before importing TensorFlow (the functions raise
``LegacyKerasRequired`` saying so otherwise). Our builders make the same graph there.

What TFMOT cannot do on MobileNets out of the box, and how it is met here:
- ``prune_low_magnitude`` / ``cluster_weights`` on a whole model reject layers they do
  not know (``Rescaling``, #864): both are applied layer by layer (``clone_model``) to
  the weighted layers only, so every model works.
- ``quantize_model`` rejects ``Rescaling`` (the input scaling and h-swish's
  ``x/6``, ``x+3``), ``Multiply`` (h-swish, squeeze-excite gates, LR-ASPP's gate) and
  ``L2Normalization`` (FaceNet's embedding; ``UnitNormalization`` too): these weightless layers get
  ``OutputQuantizeConfig`` (an 8-bit moving-average quantizer on the
  output, what TFLite's int8 kernels compute), so V1/V2/V3 train quantization-aware
  with no layer rewrite. A weighted layer TFMOT does not support raises a
  ``ValueError`` naming it and the fix.

Pruning and clustering wrap layers; ``strip`` removes the wrappers (keeping the
zeros / shared values) before export. Every function works on a private copy: the
model passed in is never changed.
"""

import numpy as np

from mobilenet_tf import _keras
from mobilenet_tf import walkers

PRUNABLE = ("Conv2D", "Dense")  # depthwise kernels (9 weights a channel) stay dense, as in the TF guides
# TFMOT 0.8 wraps DepthwiseConv2D for clustering, but its kernels came back unclustered
# after stripping (4799 distinct values with 8 clusters, measured): left dense, like pruning.
CLUSTERABLE = ("Conv2D", "Dense")
CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based", "random")


class LegacyKerasRequired(RuntimeError):
    pass


def require_legacy_keras():
    """Raise ``LegacyKerasRequired`` (saying how to fix it) in a Keras 3 process."""
    if not _keras.LEGACY_KERAS:
        raise LegacyKerasRequired(
            "mobilenet_tf.compress needs tf_keras (tensorflow-model-optimization 0.8 does not support Keras 3): "
            "set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, e.g. run it in its own process "
            "(`TF_USE_LEGACY_KERAS=1 python ...`); `mobilenet-tf compress` and recipes/compress.py do this.")


def _tfmot():
    require_legacy_keras()
    import tensorflow_model_optimization as tfmot

    return tfmot


def _kind(layer):
    """The layer's class name, e.g. "Conv2D" (DepthwiseConv2D subclasses Conv2D: by name)."""
    return type(layer).__name__


def prune(model, target_sparsity, end_step, begin_step=0, initial_sparsity=0.0, frequency=100):
    """Wrap every Conv2D / Dense kernel for magnitude pruning with TFMOT's polynomial
    schedule (sparsity ``initial_sparsity`` at ``begin_step`` -> ``target_sparsity`` at
    ``end_step``, updated every ``frequency`` steps). Fine-tune the result with
    ``callbacks=pruning_callbacks()``, then ``strip``.
    """
    if not 0.0 < target_sparsity < 1.0:
        raise ValueError(f"`target_sparsity` must be in (0, 1); got {target_sparsity}.")
    if not 0.0 <= initial_sparsity < target_sparsity:
        raise ValueError(f"`initial_sparsity` must be in [0, target_sparsity); got {initial_sparsity}.")
    if end_step <= begin_step:
        raise ValueError(f"`end_step` ({end_step}) must be after `begin_step` ({begin_step}).")
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity, target_sparsity, begin_step, end_step,
                                                    frequency=min(frequency, end_step - begin_step))

    def wrap(layer):
        if _kind(layer) in PRUNABLE:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return _clone(model, wrap)


def pruning_callbacks():
    """The callback ``fit`` needs while pruning (advances the pruning step)."""
    return [_tfmot().sparsity.keras.UpdatePruningStep()]


def cluster(model, clusters, init="kmeans_plus_plus", preserve_sparsity=False):
    """Wrap every Conv2D / Dense kernel so that it holds at most
    ``clusters`` distinct values (trainable centroids). ``preserve_sparsity`` keeps
    pruned zeros at zero (apply after ``prune`` + ``strip``)."""
    if not isinstance(clusters, int) or clusters < 2:
        raise ValueError(f"`clusters` must be an integer >= 2; got {clusters!r}.")
    if init not in CENTROID_INITS:
        raise ValueError(f"`init` must be one of {CENTROID_INITS}; got {init!r}.")
    tfmot = _tfmot()
    method = getattr(tfmot.clustering.keras.CentroidInitialization, init.upper())

    def wrap(layer):
        if _kind(layer) in CLUSTERABLE and layer.kernel.shape.num_elements() > clusters:
            return tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=clusters,
                                                          cluster_centroids_init=method,
                                                          preserve_sparsity=preserve_sparsity)
        return layer

    return _clone(model, wrap)


def strip(model):
    """Remove pruning and clustering wrappers (their effect stays in the weights)."""
    tfmot = _tfmot()
    return tfmot.clustering.keras.strip_clustering(tfmot.sparsity.keras.strip_pruning(model))


def _output_quantize_config():
    tfmot = _tfmot()
    quant = tfmot.quantization.keras

    class OutputQuantizeConfig(quant.QuantizeConfig):
        """A weightless layer (Rescaling, Multiply): quantize its output to 8 bits."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [quant.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                           narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


# Weightless layers TFMOT's default scheme rejects.
OUTPUT_QUANTIZED = ("Rescaling", "Multiply", "UnitNormalization", "L2Normalization")
QAT_SCHEMES = ("default", "prune_preserve", "cluster_preserve")


def quantize_aware(model, scheme="default"):
    """``quantize_model`` for our models: (B, H, W, 3) -> same outputs, with fake-quant
    nodes. ``scheme``: "default", or "prune_preserve" / "cluster_preserve" (TFMOT's
    collaborative optimisation: QAT keeps the zeros / the shared values of a model
    that was pruned / clustered and stripped).

    Raises:
        ValueError: a layer TFMOT cannot quantize, naming it and the fix.
    """
    if scheme not in QAT_SCHEMES:
        raise ValueError(f"`scheme` must be one of {QAT_SCHEMES}; got {scheme!r}.")
    tfmot = _tfmot()
    quant = tfmot.quantization.keras
    schemes = {"default": None,
               "prune_preserve": tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme,
               "cluster_preserve": tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme}
    config_cls = _output_quantize_config()

    def annotate(layer):
        if _kind(layer) in OUTPUT_QUANTIZED:
            return quant.quantize_annotate_layer(layer, config_cls())
        return layer

    annotated = quant.quantize_annotate_model(_clone(model, annotate))
    try:
        with quant.quantize_scope({"OutputQuantizeConfig": config_cls}):
            if schemes[scheme] is None:
                return quant.quantize_apply(annotated)
            return quant.quantize_apply(annotated, schemes[scheme]())
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"quantization-aware training cannot wrap this model: {error} Give that layer a "
                         "tfmot QuantizeConfig (see mobilenet_tf.compress.OUTPUT_QUANTIZED for weightless "
                         "layers) or replace it with stock layers.") from error


def sparsity(model):
    """{layer name: fraction of zeros in its kernel} for every Conv2D / Dense of a
    stripped (or never wrapped) model."""
    return {name: float(np.mean(kernel == 0)) for name, kernel in _kernels(model, PRUNABLE)}


def unique_values(model):
    """{layer name: distinct values in its kernel} for every clusterable layer of a
    stripped model."""
    return {name: int(np.unique(kernel).size) for name, kernel in _kernels(model, CLUSTERABLE)}


def _kernels(model, kinds):
    """(name, kernel as numpy) of every layer of those class names, nested models included."""
    for layer in walkers.flat_layers(model):
        if _kind(layer) in kinds:
            yield layer.name, np.asarray(layer.kernel)


def _clone(model, clone_function):
    """``clone_model`` with ``clone_function`` applied to a private copy of ``model``:
    TFMOT's wrappers take the layer they wrap (``cluster_weights`` even removes its
    kernel from the layer's weights), so wrapping ``model``'s own layers would change
    the caller's model (measured: a 137-weight model kept 122 after ``cluster``)."""
    keras = _keras.keras
    private = keras.models.clone_model(model)
    private.set_weights(model.get_weights())
    return keras.models.clone_model(private, clone_function=clone_function)
