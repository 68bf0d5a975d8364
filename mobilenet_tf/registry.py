"""Model registry: ``build("v3_small", alpha=0.75)`` and ``list_models()``.

Builders register themselves with ``@register(name)``; a registered name may fix
some arguments (``v3_small_minimalistic`` is ``mobilenet_v3_small`` with
``minimalistic=True``). Heads and recipes look backbones up here by name.
"""

import dataclasses
import difflib
import inspect

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    builder: object
    fixed: dict
    description: str


def register(name, description="", **fixed):
    """Decorator: make ``builder`` available as ``build(name)``, with ``fixed`` kwargs."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered.")
        summary = description or (inspect.getdoc(builder) or name).splitlines()[0]
        _REGISTRY[name] = Entry(name, builder, dict(fixed), summary)
        return builder

    return decorate


def list_models():
    """Sorted names accepted by ``build``."""
    return sorted(_REGISTRY)


def get_entry(name):
    """The registry entry for ``name``; ``ValueError`` naming the closest valid name."""
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
    ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``).

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
