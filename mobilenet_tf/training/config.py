"""Recipe configs: a dataclass per recipe, its fields become command-line flags.

Every recipe has the same shape: ``Config`` (a dataclass whose defaults are the
paper's values, or ``None`` for "the schedule's / dataset's default"),
``get_args_parser()`` generated from it, and ``main(config)``. The resolved
config is written to ``config.json`` in the run directory.

A recipe's preset dicts (``SYNTHETIC_DEFAULTS``, ``COCO_DEFAULTS``, ...) are its
``Config.PRESETS = {label: dict}``; the help of each ``None`` field lists their
values from there ("--image-size ... (imagenet, other datasets: 224; synthetic:
64)"), so the help never repeats them in prose and cannot drift from them.
"""

import argparse
import dataclasses
import json
import sys
import typing

from mobilenet_tf.training.strategy import STRATEGIES


def _flag_type(hint):
    """(type, is_bool) for a field annotation such as ``int``, ``float | None``, ``str``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base, base is bool


PRESETS_EPILOG = ("A flag shown with preset values (e.g. \"synthetic: 64\") defaults to the value of the preset "
                  "that the data selects; give the flag to override it.")


def _show(value):
    """A preset or default value as the help prints it."""
    if value is None:
        return "required"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:g}"
        return text if any(c in text for c in ".en") else text + ".0"
    return str(value)


def flag_help(field, presets=None):
    """The help text of ``field``'s flag: its help, then in parentheses its default.

    The default is written once and never as "None": a field whose default is
    ``None`` ("the preset's value") lists the value of every preset that sets it,
    presets with the same value grouped ("cityscapes, folder: 500; synthetic: 4"; a
    preset value ``None`` reads "required"; one value of every preset reads
    "default: <value>"), after the field's ``default_text``
    (what ``None`` means outside the presets, e.g. "the schedule's") when it has
    one. Any other default reads "default: <value>" (none for "").
    """
    text = field.metadata.get("help", "").strip()
    parts = []
    if field.default is None:
        if field.metadata.get("default_text"):
            parts.append(f"default: {field.metadata['default_text']}")
        grouped = {}
        for label, values in (presets or {}).items():
            if field.name in values:
                grouped.setdefault(_show(values[field.name]), []).append(label)
        if len(grouped) == 1 and len(next(iter(grouped.values()))) == len(presets) > 1:
            parts.append(f"default: {next(iter(grouped))}")  # every preset agrees
        else:
            parts += [f"{', '.join(labels)}: {value}" for value, labels in grouped.items()]
    elif field.default is not dataclasses.MISSING and field.default != "":
        parts.append(f"default: {_show(field.default)}")
    if parts:
        text = f"{text} ({'; '.join(parts)})" if text else f"({'; '.join(parts)})"
    # argparse %-formats help strings.
    return text.replace("%", "%%") or " "


def get_args_parser(config_cls, description=None, presets=None):
    """An ``argparse`` parser with one ``--flag`` per field of ``config_cls``.

    A field's ``metadata={"help": ..., "choices": ..., "default_text": ...}``
    documents the flag; bools become ``--flag / --no-flag``. Abbreviated flags are
    refused (``--epoch 3`` is an error, not ``--epochs 3``).

    Args:
        config_cls: a dataclass (a recipe's ``Config``).
        description: the parser's description (default: the docstring's first line).
        presets: ``{label: {field name: value}}``, the values a ``None`` field takes
            under each preset (e.g. ``{"synthetic": SYNTHETIC_DEFAULTS, ...}``),
            shown in that field's help (see ``flag_help``). Default:
            ``config_cls.PRESETS`` when the class has it.

    Example:
        >>> get_args_parser(Config, presets={"imagenet": {"image_size": 224}, "synthetic": {"image_size": 64}})
    """
    if presets is None:
        presets = getattr(config_cls, "PRESETS", None) or {}
    parser = argparse.ArgumentParser(
        description=description or (config_cls.__doc__ or "").strip().splitlines()[0],
        epilog=PRESETS_EPILOG if presets else None,
        allow_abbrev=False,
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        base, is_bool = _flag_type(hints[field.name])
        kwargs = dict(default=field.default, help=flag_help(field, presets))
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if field.metadata.get("choices") is not None:
            # None is never a choice: a None default means "the preset's value".
            kwargs["choices"] = [choice for choice in field.metadata["choices"] if choice is not None]
        parser.add_argument(flag, type=base, **kwargs)
    return parser


def config_from_args(config_cls, argv=None, description=None, presets=None):
    """Parse ``argv`` into a ``config_cls`` instance."""
    args = get_args_parser(config_cls, description, presets).parse_args(argv)
    return config_cls(**vars(args))


def save_config(config, path):
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)


def field(default, help, choices=None, default_text=None):
    """A dataclass field with a help text (and choices) for its flag.

    ``default_text`` says what a ``None`` default means where no preset sets the
    field (e.g. "the schedule's"); the help shows it as "default: <text>". Do not
    write default values into ``help``: ``flag_help`` adds them.
    """
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if default_text is not None:
        metadata["default_text"] = default_text
    return dataclasses.field(default=default, metadata=metadata)


def keras_verbose(setting):
    """``--verbose`` -> Keras' ``verbose``: "auto" is a progress bar on a TTY, else one line per epoch."""
    return int(setting) if setting != "auto" else (1 if sys.stdout.isatty() else 2)


@dataclasses.dataclass
class RunOptions:
    """The flags every recipe shares: distribution, precision, seeds, run directory
    handling and logging. A recipe's ``Config`` subclasses it; ``engine.setup``,
    ``engine.open_run`` and ``keras_verbose`` read these fields."""

    strategy: str = field("auto", "tf.distribute strategy", choices=list(STRATEGIES))
    sync_batchnorm: bool = field(True, "with several replicas, all-reduce BatchNormalization statistics "
                                       "(SyncBN: every worker keeps the same moving statistics)")
    num_cpu_devices: int = field(0, "split the CPU into N logical devices (mirrored training without GPUs)")
    mixed_precision: bool = field(False, "mixed_float16 on GPU, mixed_bfloat16 on TPU")
    force_mixed_precision: bool = field(False, "allow --mixed-precision on CPU (slow there)")
    jit_compile: bool = field(False, "compile the train step with XLA")
    overwrite: bool = field(False, "replace the run (finished or interrupted) in --output-dir; the old one is kept "
                                   "in <output_dir>.previous until the new run saves an epoch")
    strict_data: bool = field(False, "stop before training at the first unreadable image of a folder dataset; "
                                     "without it such images are skipped and listed in skipped_files.txt")
    eval_only: bool = field(False, "only evaluate --weights")
    saved_model: bool = field(True, "also export TensorFlow SavedModels (saved_model/, and a detector's "
                                    "detector/) beside model.keras")
    seed: int = field(0, "random seed")
    deterministic: bool = field(False, "deterministic ops, input order and one inter-op thread (slower)")
    verbose: str = field("auto", "Keras progress: auto (one line per epoch when not a TTY) | 0 | 1 | 2")
