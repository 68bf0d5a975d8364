"""Model registry: one frozen ``Variant`` record per name, and the builders that read it.

``build("v3_small", alpha=0.75)`` and ``list_models()`` as before. Each registered
name carries everything else the package knows about it (torchvision's weights
metadata and timm's ``feature_info`` are the models): the builder and the arguments
the name fixes, the width argument its family takes, its ``reduced_tail`` default,
the keras.applications ImageNet weights (widths, sizes, constructor), the input
range, the paper's rows for the zoo table and the feature information of every
endpoint (name, stride, channels, layer). ``weights.PUBLISHED_ALPHAS`` /
``PUBLISHED_SIZES``, ``zoo.PAPER_ROWS`` and the tests' ``PUBLISHED_VARIANTS`` are
derived from these records.

Heads build their feature extractor with ``build_features(name, alpha=...,
output_stride=..., reduced_tail=...)``, which refuses options the family does not
take and returns the model with its feature information; code that builds whole
classifiers asks ``options_for(name, alpha=..., reduced_tail=...)`` for the kwargs
the family takes.
"""

import dataclasses
import difflib
import inspect
import math
import os
import typing
from typing import Callable, Optional

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One endpoint of ``build(name, include_top=False, return_endpoints=True)``.

    Attributes:
        name: the endpoint's key, "C{log2(stride)}" by its nominal stride, or
            "C4_expand" (the expansion feeding the first stride-32 block).
        stride: its stride relative to the input (with an ``output_stride`` below
            the nominal stride, that output stride: dilation replaced the rest).
        channels: its channel count (at the width the record was asked for).
        layer: the name of the layer whose output it is.
    """

    name: str
    stride: int
    channels: int
    layer: str


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """ImageNet weights keras.applications publishes for a registry name.

    Attributes:
        constructor: the ``keras.applications`` attribute ("MobileNetV3Small", ...);
            it is called with the arguments the registry name fixes
            (``minimalistic=True``).
        alphas: the widths with weights (``(1.0,)`` for a family without alpha).
        sizes: input sides with weight files (other sizes load the last one: the
            weights do not depend on the input size).
        takes_alpha: the constructor has an ``alpha`` argument.
        takes_depth_multiplier: the constructor has a ``depth_multiplier`` argument.
    """

    constructor: str
    alphas: tuple = (1.0,)
    sizes: tuple = (224,)
    takes_alpha: bool = True
    takes_depth_multiplier: bool = False


@dataclasses.dataclass(frozen=True)
class PaperRow:
    """A published figure: multiply-adds and params in millions, and where printed.

    ``note`` explains a reference we do not expect to match (tests skip nothing
    silently: they check every row whose ``check_*`` is True).
    """

    name: str
    alpha: float
    resolution: int
    madds_m: float
    params_m: float
    source: str
    check_madds: bool = True
    check_params: bool = True
    note: str = ""


def paper(alpha, resolution, madds_m, params_m, source, **options):
    """A ``PaperRow`` without its name, for ``register_variant(paper_rows=...)``."""
    return dict(alpha=alpha, resolution=resolution, madds_m=madds_m, params_m=params_m, source=source, **options)


@dataclasses.dataclass(frozen=True)
class Variant:
    """Everything known about one registry name.

    Attributes:
        name: the registry name ("v3_small_minimalistic").
        builder: the family's builder function.
        fixed: arguments the name fixes (``{"minimalistic": True}``).
        description: one line for ``mobilenet-tf list``.
        family: the builder family ("mobilenet_v3", "shufflenet_v2", ...).
        width_argument: "alpha" when the family takes a width multiplier, else None.
        reduced_tail: the default of ``reduced_tail`` for feature extractors
            (``build_features``: True for V3, whose paper's heads halve the last
            stage; False for V1/V2); None when the family has no reduced tail.
            Whole classifiers keep the builder's default (False).
        published: ``PublishedWeights``, or None (keras.applications has none).
        paper_rows: ``PaperRow``s of the zoo table.
        features: ``(**fixed, [alpha], [reduced_tail]) -> tuple of FeatureInfo`` at
            output stride 32, or None for a name registered without it.
    """

    name: str
    builder: Callable
    fixed: dict
    description: str
    family: str = ""
    width_argument: Optional[str] = None
    reduced_tail: Optional[bool] = None
    published: Optional[PublishedWeights] = None
    paper_rows: tuple = ()
    features: Optional[Callable] = None

    @property
    def input_range(self):
        """Pixel range the builder's default model expects: (0, 255) when it
        rescales inside (``include_preprocessing=True`` by default), else (-1, 1)."""
        return input_range(self.builder_default("include_preprocessing"))

    def builder_default(self, argument):
        return inspect.signature(self.builder).parameters[argument].default

    def feature_info(self, alpha=1.0, reduced_tail=False, output_stride=32):
        """The endpoints of this name built with ``alpha`` / ``reduced_tail`` /
        ``output_stride``, in ``backbone.ENDPOINT_NAMES`` order (the last is the
        final feature map)."""
        if self.features is None:
            raise ValueError(f"{self.name!r} was registered without feature information; register it with "
                             "registry.register_variant(..., features=...).")
        options = dict(self.fixed)
        if self.width_argument == "alpha":
            options["alpha"] = alpha
        if self.reduced_tail is not None:
            options["reduced_tail"] = reduced_tail
        return tuple(dataclasses.replace(info, stride=min(info.stride, output_stride))
                     for info in self.features(**options))


def input_range(include_preprocessing):
    """(low, high) of the pixels a model built with ``include_preprocessing`` takes."""
    return (0.0, 255.0) if include_preprocessing else (-1.0, 1.0)


def register(name, description="", **fixed):
    """Decorator: make ``builder`` available as ``build(name)``, with ``fixed`` kwargs
    (a bare record; ``register_variant`` records the rest)."""

    def decorate(builder):
        register_variant(name, builder, description, fixed=fixed)
        return builder

    return decorate


def register_variant(name, builder, description="", *, fixed=None, family="", width_argument=None,
                     reduced_tail=None, published=None, paper_rows=(), features=None):
    """Add the ``Variant`` record of ``name`` (arguments as its attributes; ``paper_rows``
    given as ``paper(...)`` dicts or ``PaperRow``s). Returns the record."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered.")
    if width_argument not in (None, "alpha"):
        raise ValueError(f"`width_argument` must be 'alpha' or None; got {width_argument!r}.")
    summary = description or (inspect.getdoc(builder) or name).splitlines()[0]
    rows = tuple(row if isinstance(row, PaperRow) else PaperRow(name, **row) for row in paper_rows)
    record = Variant(name, builder, dict(fixed or {}), summary, family or getattr(builder, "__name__", name),
                     width_argument, reduced_tail, published, rows, features)
    _REGISTRY[name] = record
    return record


def list_models():
    """Sorted names accepted by ``build``."""
    return sorted(_REGISTRY)


def variants():
    """Every ``Variant`` record, in registration order (the families' order)."""
    return tuple(_REGISTRY.values())


def get_entry(name):
    """The ``Variant`` record of ``name``; ``ValueError`` naming the closest valid name."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model name {name!r}.{hint} Valid names: {', '.join(list_models())}.")
    return _REGISTRY[name]



def accepts(name, argument):
    """Whether ``build(name, ...)`` takes ``argument`` (e.g. "alpha", "reduced_tail")."""
    entry = get_entry(name)
    return argument in inspect.signature(entry.builder).parameters and argument not in entry.fixed


def build(name, **kwargs):
    """Build a registered model: ``build("v3_large", input_shape=(320, 320, 3), include_top=False)``.

    Keyword arguments are those of the family's builder (``mobilenet_v1``,
    ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``,
    ``squeezenet``, ``shufflenet_v1`` / ``_v2``, ``xception``) less those the
    name fixes.

    Returns:
        A functional ``keras.Model``.
    """
    entry = get_entry(name)
    allowed = [p for p in inspect.signature(entry.builder).parameters if p not in entry.fixed]
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            fixed = f" ({key} is fixed by this name)" if key in entry.fixed else ""
            raise ValueError(
                f"unknown argument {key!r} for model {name!r}{fixed}.{hint} "
                f"Allowed: {', '.join(allowed)}."
            )
    return entry.builder(**entry.fixed, **kwargs)


# ------------------------------------------------------------------ options by family

def _names_taking(predicate):
    """Registry names matching ``predicate``, a family of several shown as "prefix*"."""
    families = {}
    for record in variants():
        if predicate(record):
            families.setdefault(record.family, []).append(record.name)
    shown = []
    for names in families.values():
        prefix = os.path.commonprefix(names)
        shown.append(names[0] if len(names) == 1 else prefix + "*")
    return ", ".join(shown)


def _width_note(record):
    """How ``record``'s family sets its width, for refusing ``alpha``."""
    if "width" in record.fixed:
        siblings = [r.name for r in variants() if r.family == record.family]
        return f"has its width in its name ({', '.join(siblings)}): pick one of those names"
    if "width" in inspect.signature(record.builder).parameters:
        return ("has no width multiplier (its released widths are `width=` of build(name, width=...), "
                f"see mobilenet_tf.{record.family})")
    return "has no width multiplier"


def options_for(name, *, alpha=None, reduced_tail=None):
    """The builder kwargs among ``alpha`` / ``reduced_tail`` that ``name``'s family takes.

    None leaves an option to the builder. A family without a width multiplier
    accepts ``alpha=1.0`` (the width it has) and one without a reduced tail accepts
    ``reduced_tail=False``; anything else is refused with a ``ValueError`` that
    names the families taking the option.

    >>> options_for("v3_small", alpha=0.75, reduced_tail=True)
    {'alpha': 0.75, 'reduced_tail': True}
    >>> options_for("shufflenet_v2_x1_0", alpha=1.0)
    {}
    """
    record = get_entry(name)
    options = {}
    if alpha is not None:
        if record.width_argument == "alpha":
            options["alpha"] = alpha
        elif isinstance(alpha, bool) or alpha != 1.0:
            takers = _names_taking(lambda r: r.width_argument == "alpha")
            raise ValueError(f"`alpha` applies to {takers}; {name!r} {_width_note(record)}. Got alpha={alpha!r}: "
                             "leave alpha out (or pass 1.0).")
    if reduced_tail is not None:
        if record.reduced_tail is not None:
            options["reduced_tail"] = reduced_tail
        elif reduced_tail:
            takers = _names_taking(lambda r: r.reduced_tail is not None)
            raise ValueError(f"`reduced_tail` applies to {takers}; {name!r} has no reduced tail. Got "
                             f"reduced_tail={reduced_tail!r}: leave reduced_tail out (or pass False).")
    return options


class Features(typing.NamedTuple):
    """A feature extractor and its endpoints: ``model`` outputs a dict keyed like
    ``info`` (endpoint name -> ``FeatureInfo``, shallowest first)."""

    model: object
    info: dict

    @property
    def last(self):
        """The ``FeatureInfo`` of the final feature map."""
        return list(self.info.values())[-1]

    def at_stride(self, stride):
        """Endpoint names at ``stride``, shallowest first."""
        return [key for key, info in self.info.items() if info.stride == stride]


def build_features(name, *, alpha=None, reduced_tail=None, output_stride=32, input_shape=None,
                   input_tensor=None, weights=None, include_preprocessing=True):
    """A feature extractor for a head: ``build(name, include_top=False,
    return_endpoints=True, ...)`` with the options ``name``'s family takes.

    Args:
        name: a registry name.
        alpha: width multiplier (families with ``alpha``; None = 1.0).
        reduced_tail: halve the last stage; None = the record's default for heads
            (True for MobileNetV3, False for V1/V2). Families without one accept
            only None / False.
        output_stride: 32, or 16 / 8 to dilate the last stages.
        input_shape, input_tensor, weights: as in ``build``.
        include_preprocessing: the model takes [0, 255] pixels (the heads' contract).

    Returns:
        ``Features(model, info)``: info maps each endpoint name to its
        ``FeatureInfo``, whose stride accounts for ``output_stride``.

    Raises:
        ValueError: an option the family does not take (naming the families that
            take it), or any argument the builder refuses.

    Example:
        >>> model, info = build_features("v3_small", alpha=0.75, output_stride=16)
        >>> info["C5"].stride
        16
    """
    record = get_entry(name)
    if record.features is None:
        record.feature_info()  # raises: no feature information
    if reduced_tail is None:
        reduced_tail = record.reduced_tail
    options = options_for(name, alpha=alpha, reduced_tail=reduced_tail)
    model = build(name, include_top=False, return_endpoints=True, input_shape=input_shape,
                  input_tensor=input_tensor, weights=weights, include_preprocessing=include_preprocessing,
                  output_stride=output_stride, **options)
    info = record.feature_info(alpha=options.get("alpha", 1.0), reduced_tail=options.get("reduced_tail", False),
                               output_stride=output_stride)
    return Features(model, {feature.name: feature for feature in info})


# ------------------------------------------------------------------ feature info from layer walks

def walk_features(layers, endpoint_names=("C1", "C2", "C3", "C4", "C4_expand", "C5_block", "C5"),
                  last_block=False):
    """``FeatureInfo`` of a network described layer by layer, by ``backbone.StrideWalk``'s rule.

    Args:
        layers: ``(stride, channels, layer_name)`` per layer (or block) in order;
            a fourth item ``(channels, layer_name)`` gives the expansion of a
            block, recorded as "C4_expand" when the block goes from stride 16 to 32.
            Before each layer with stride > 1 the previous output is the endpoint
            of the stride so far; the last output is the endpoint of the final stride.
        endpoint_names: the order of the result.
        last_block: the last layer is a 1x1 conv after the blocks (V2 / V3): the
            output before it is recorded as "C5_block".

    Returns:
        Tuple of ``FeatureInfo`` (nominal strides), in ``endpoint_names`` order.
    """
    found, nominal, previous = {}, 1, None
    for index, (stride, channels, layer, *expansion) in enumerate(layers):
        if stride > 1:
            if nominal > 1:
                found[f"C{int(math.log2(nominal))}"] = FeatureInfo("", nominal, *previous)
            if nominal == 16 and expansion:
                found["C4_expand"] = FeatureInfo("", 16, *expansion[0])
            nominal *= stride
        if last_block and index == len(layers) - 1:
            found[f"C{int(math.log2(nominal))}_block"] = FeatureInfo("", nominal, *previous)
        previous = (channels, layer)
    found[f"C{int(math.log2(nominal))}"] = FeatureInfo("", nominal, *previous)
    return tuple(dataclasses.replace(found[key], name=key) for key in endpoint_names if key in found)


def published_table(field):
    """{registry name: ``PublishedWeights.<field>``} over the names with published weights."""
    return {record.name: getattr(record.published, field) for record in variants() if record.published}


def paper_rows():
    """Every record's ``PaperRow``s, in registration order (the zoo table)."""
    return tuple(row for record in variants() for row in record.paper_rows)
