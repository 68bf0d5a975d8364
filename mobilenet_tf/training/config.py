"""Recipe configs: a dataclass per recipe, its fields become command-line flags.

Every recipe has the same shape: ``Config`` (a dataclass whose defaults are the
paper's values, or ``None`` for "the schedule's / dataset's default"),
``get_args_parser()`` generated from it, and ``main(config)``. The resolved
config is written to ``config.json`` in the run directory.
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


def get_args_parser(config_cls, description=None):
    """An ``argparse`` parser with one ``--flag`` per field of ``config_cls``.

    A field's ``metadata={"help": ..., "choices": ...}`` documents the flag; bools
    become ``--flag / --no-flag``.
    """
    parser = argparse.ArgumentParser(
        description=description or (config_cls.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        base, is_bool = _flag_type(hints[field.name])
        kwargs = dict(default=field.default, help=field.metadata.get("help", " "))
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        parser.add_argument(flag, type=base, **kwargs)
    return parser


def config_from_args(config_cls, argv=None, description=None):
    """Parse ``argv`` into a ``config_cls`` instance."""
    args = get_args_parser(config_cls, description).parse_args(argv)
    return config_cls(**vars(args))


def save_config(config, path):
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)


def field(default, help, choices=None):
    """A dataclass field with a help text (and choices) for its flag."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
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
    overwrite: bool = field(False, "replace a finished run in --output-dir")
    strict_data: bool = field(False, "stop before training at the first unreadable image of a folder dataset "
                                     "(default: skip it and list it in skipped_files.txt)")
    eval_only: bool = field(False, "only evaluate --weights")
    seed: int = field(0, "random seed")
    deterministic: bool = field(False, "deterministic ops and input order (slower)")
    verbose: str = field("auto", "Keras progress: auto (one line per epoch when not a TTY) | 0 | 1 | 2")
