"""Weights: keras.applications -> mobilenet_tf transfer by layer name, loading, and
``save_by_name`` / ``load_by_name`` to move a model between Keras 3 and tf_keras.

Our weighted layers carry keras.applications' names, so its ImageNet weights
copy across layer by layer. ``weights="imagenet"`` builds the matching
keras.applications model (which downloads the weights), then copies them in.
"""

import os
import re
from collections.abc import Mapping

import numpy as np

from mobilenet_tf import registry
from mobilenet_tf._keras import LEGACY_KERAS, keras


class _Derived(Mapping):
    """A read-only {registry name: value} view of the records' ``PublishedWeights``,
    read when used (the records are registered after this module is imported)."""

    def __init__(self, field):
        self._field = field

    def _table(self):
        return registry.published_table(self._field)

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())

    def __repr__(self):
        return repr(self._table())


# Widths keras.applications publishes ImageNet weights for, per registry name, and the
# input sizes it has weight files for (others load the last one: the weights do not
# depend on the input size). Both derived from the registry's records.
PUBLISHED_ALPHAS = _Derived("alphas")
PUBLISHED_SIZES = _Derived("sizes")

WEIGHTS_SUFFIXES = (".weights.h5",) if not LEGACY_KERAS else (".weights.h5", ".h5")


def keras_application(
    variant, *, alpha=1.0, input_shape=None, include_top=True, weights=None, classes=1000,
    classifier_activation="softmax", pooling=None, depth_multiplier=1,
):
    """The keras.applications model that corresponds to a registry name (its record's
    ``PublishedWeights.constructor``, with the arguments the name fixes).

    Used to fetch ImageNet weights and, in tests and benchmarks, as the reference.
    """
    published = registry.get_entry(variant).published
    if published is None:
        raise ValueError(f"no keras.applications model corresponds to {variant!r}.")
    kwargs = dict(registry.get_entry(variant).fixed, input_shape=input_shape, include_top=include_top,
                  weights=weights, classes=classes, classifier_activation=classifier_activation, pooling=pooling)
    if published.takes_alpha:
        kwargs["alpha"] = alpha
    if published.takes_depth_multiplier:
        kwargs["depth_multiplier"] = depth_multiplier
    return getattr(keras.applications, published.constructor)(**kwargs)


def check_weights_argument(
    weights, variant, *, alpha, include_top, classes, channels, reduced_tail=False, depth_multiplier=1
):
    """Refuse a ``weights`` argument that cannot be honoured, before anything is built."""
    if weights is None:
        return
    if weights == "imagenet":
        if variant not in PUBLISHED_ALPHAS:
            raise ValueError(
                f"`weights='imagenet'`: keras.applications publishes no ImageNet weights for {variant} "
                "(it has MobileNet V1/V2/V3 and Xception). Use weights=None, or a .weights.h5 file you trained."
            )
        published = PUBLISHED_ALPHAS[variant]
        problems = []
        if alpha not in published:
            problems.append(f"alpha={alpha:g} (published widths: {', '.join(f'{a:g}' for a in published)})")
        if include_top and classes != 1000:
            problems.append(f"classes={classes} with include_top=True (ImageNet has 1000; "
                            "use include_top=False for your own classes)")
        if channels != 3:
            problems.append(f"{channels} input channels (ImageNet weights need 3)")
        if reduced_tail:
            problems.append("reduced_tail=True (changes the last stage's shapes)")
        if depth_multiplier != 1:
            problems.append(f"depth_multiplier={depth_multiplier} (published: 1)")
        if problems:
            raise ValueError(
                f"`weights='imagenet'` has no published weights for {variant} with "
                + "; ".join(problems) + ". Use weights=None to train from scratch."
            )
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"`weights` must be None, 'imagenet' or a path to a {' / '.join(WEIGHTS_SUFFIXES)} file; "
            f"got {weights!r}."
        )
    path = os.fspath(weights)
    if not path.endswith(WEIGHTS_SUFFIXES):
        raise ValueError(
            f"`weights` file {path!r} must end with {' or '.join(WEIGHTS_SUFFIXES)} "
            "(as written by `model.save_weights`)."
        )
    if not os.path.isfile(path):
        raise ValueError(f"`weights` file {path!r} does not exist.")


def load_weights(model, weights, variant, *, alpha, include_top, input_shape, depth_multiplier=1):
    """Fill ``model`` from ``weights`` (None, "imagenet" or a file path)."""
    if weights is None:
        return
    if weights == "imagenet":
        size = input_shape[0] if input_shape[0] == input_shape[1] else None
        published_sizes = PUBLISHED_SIZES[variant]
        if size not in published_sizes:
            size = published_sizes[-1]  # e.g. 224 for MobileNets; Xception's top only loads at 299
        try:
            source = keras_application(
                variant, alpha=alpha, input_shape=(size, size, 3), include_top=include_top,
                weights="imagenet", depth_multiplier=depth_multiplier,
            )
        except Exception as error:  # network, disk or a broken download
            raise RuntimeError(
                f"could not get keras.applications' ImageNet weights for {variant} (alpha={alpha:g}): "
                f"{error}. The weights are downloaded on first use and cached in ~/.keras/models; "
                "check the internet connection, or load a local file with weights=PATH."
            ) from error
        load_keras_applications_weights(model, source)
        return
    try:
        model.load_weights(os.fspath(weights))
    except Exception as error:
        raise ValueError(
            f"could not load `weights` from {os.fspath(weights)!r}: the file is corrupt or was saved "
            f"from a different architecture ({type(error).__name__}: {error})."
        ) from error


def load_keras_applications_weights(model, source_model):
    """Copy a keras.applications MobileNet's weights into ``model``, layer by layer.

    Every layer of ``model`` that holds weights must exist in ``source_model``
    under the same name with the same weight shapes; extra source layers (a
    classifier the target lacks) are ignored. tf_keras.applications' V3 uses
    TF-slim names ("Conv/BatchNorm", "expanded_conv_1/expand"); those are read
    as Keras 3's ("conv_bn", "expanded_conv_1_expand").

    Args:
        model: a mobilenet_tf model.
        source_model: e.g. ``keras.applications.MobileNetV3Small(weights="imagenet")``.

    Returns:
        The names of the layers copied.

    Raises:
        ValueError: naming the first layer that is missing or differs in shape.
    """
    slim_names = {_from_slim_name(layer.name): layer for layer in source_model.layers}
    sources = {**slim_names, **{layer.name: layer for layer in source_model.layers}}
    # keras.applications leaves some layers unnamed (Xception's residual 1x1 convs and
    # their BN): Keras numbers those "conv2d_3", ..., differently in every session, so
    # ours, named "<block>_residual_conv/_bn", are paired with them in order.
    unnamed = [layer for layer in source_model.layers if _AUTO_NAME.match(layer.name) and layer.get_weights()]
    ordered = [layer for layer in model.layers if layer.name.endswith(ORDER_MATCHED_SUFFIXES)
               and layer.name not in sources and layer.get_weights()]
    if ordered and len(ordered) != len(unnamed):
        raise ValueError(f"cannot transfer weights: {len(ordered)} layers of {model.name} are matched by order "
                         f"({ordered[0].name}, ...) but {source_model.name} has {len(unnamed)} unnamed ones.")
    unnamed = iter(unnamed)
    pending = []
    for layer in model.layers:
        target = layer.get_weights()
        if not target:
            continue
        source = sources.get(layer.name)
        if source is None and layer.name.endswith(ORDER_MATCHED_SUFFIXES):
            source = next(unnamed, None)
        if source is None:
            raise ValueError(
                f"cannot transfer weights: layer {layer.name!r} of {model.name} has no counterpart "
                f"in {source_model.name}. Are both the same family and include_top setting?"
            )
        values = source.get_weights()
        target_shapes = [np.shape(w) for w in target]
        source_shapes = [np.shape(w) for w in values]
        if target_shapes != source_shapes:
            raise ValueError(
                f"cannot transfer weights: layer {layer.name!r} has weight shapes {target_shapes} in "
                f"{model.name} but {source_shapes} in {source_model.name}. Do alpha, classes, "
                "depth_multiplier and minimalistic agree?"
            )
        pending.append((layer, values))
    for layer, values in pending:
        layer.set_weights(values)
    return [layer.name for layer, _ in pending]


ORDER_MATCHED_SUFFIXES = ("_residual_conv", "_residual_bn")
_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization)(_\d+)?$")


def _from_slim_name(name):
    """tf_keras.applications' V3 layer name -> Keras 3's: "Conv/BatchNorm" -> "conv_bn"."""
    return name.replace("/BatchNorm", "_bn").replace("/", "_").lower()


# ---------------------------------------------------------------- Keras 3 <-> tf_keras by file

def _weighted_layers(model):
    """Layers holding weights, nested models walked into."""
    for layer in model.layers:
        if getattr(layer, "layers", None):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def save_by_name(model, path):
    """Write ``model``'s weights keyed by layer name to ``path`` (an ``.npz``).

    The file both Keras worlds read the same way: Keras 3's ``.weights.h5`` keys
    layers by class and position ("layers/batch_normalization_3") and tf_keras
    writes another layout, so a model moves to tf_keras (for TFMOT) and back
    through this. Keys are ``"<layer name>/<index>"``.

    Returns:
        ``path``.
    """
    arrays = {}
    for layer in _weighted_layers(model):
        for index, value in enumerate(layer.get_weights()):
            key = f"{layer.name}/{index}"
            if key in arrays:
                raise ValueError(f"two layers of {model.name!r} are named {layer.name!r}: weights by name need "
                                 "unique layer names.")
            arrays[key] = value
    if not path.endswith(".npz"):
        raise ValueError(f"`path` must end with '.npz'; got {path!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_by_name(model, path):
    """Load a ``save_by_name`` file into ``model`` (Keras 3 or tf_keras).

    Every weighted layer of ``model`` must be in the file with the same number and
    shapes of weights; layers only in the file are ignored. Nothing is assigned
    unless everything matches.

    Returns:
        The names of the layers loaded.

    Raises:
        ValueError: missing or unreadable file, or naming the first layer that is
            missing or differs in shape.
    """
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist.")
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except Exception as error:
        raise ValueError(f"cannot read weights file {path!r} (expected an .npz from save_by_name): {error}") from error
    pending = []
    for layer in _weighted_layers(model):
        target = [np.shape(w) for w in layer.get_weights()]
        values = [arrays.get(f"{layer.name}/{i}") for i in range(len(target))]
        if any(v is None for v in values) or f"{layer.name}/{len(target)}" in arrays:
            raise ValueError(f"{path!r} has no (or other) weights for layer {layer.name!r} of {model.name!r}: was "
                             "it saved from the same architecture?")
        shapes = [v.shape for v in values]
        if shapes != target:
            raise ValueError(f"layer {layer.name!r} has weight shapes {target} in {model.name!r} but {shapes} in "
                             f"{path!r}. Do the architecture arguments (alpha, classes, ...) agree?")
        pending.append((layer, values))
    for layer, values in pending:
        layer.set_weights(values)
    return [layer.name for layer, _ in pending]
