"""Recipe flags (mobilenet_tf.training.config): help without "None", preset values shown
from the preset dicts, no abbreviated flags, every flag and default kept."""

import argparse
import dataclasses
import re

import pytest

from conftest import load_recipe
from mobilenet_tf.training import config as config_lib

RECIPES = ["imagenet", "segmentation", "facenet_distill", "ssdlite_coco", "faster_rcnn_coco", "compress"]


def flag_helps(parser):
    """{"--flag": help text as printed (whitespace collapsed)}."""
    return {action.option_strings[0]: " ".join(parser._get_formatter()._expand_help(action).split())
            for action in parser._actions if action.option_strings and action.help}


@pytest.mark.parametrize("name", RECIPES)
def test_help_never_shows_none(name):
    parser = load_recipe(name).get_args_parser()
    text = parser.format_help()
    assert "default: None" not in text and "(default: None)" not in text
    for action in parser._actions:
        assert None not in (action.choices or []), action.option_strings
    assert not re.search(r"\{[^}]*None[^}]*\}", text)  # usage / option lines list the choices


@pytest.mark.parametrize("name", RECIPES)
def test_abbreviated_flags_are_refused(name):
    parser = load_recipe(name).get_args_parser()
    assert parser.allow_abbrev is False
    long_flags = [flag for action in parser._actions for flag in action.option_strings
                  if flag.startswith("--") and len(flag) > 8]
    for flag in long_flags[:5] + ["--output-di"]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([flag[:-1], "3"] if flag != "--output-di" else [flag, "x"])
        assert exit_info.value.code == 2
    if "--epochs" in parser._option_string_actions:  # was silently --epochs 3
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--epoch", "3"])
        assert exit_info.value.code == 2
    if "--eval-only" in parser._option_string_actions:  # was --eval-only
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--eval-onl"])
        assert exit_info.value.code == 2


@pytest.mark.parametrize("name", RECIPES)
def test_flags_and_defaults_are_the_config(name):
    module = load_recipe(name)
    parsed = vars(module.get_args_parser().parse_args([]))
    assert parsed == {field.name: field.default for field in dataclasses.fields(module.Config)}


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "compress"])
def test_help_shows_every_preset_value(name):
    module = load_recipe(name)
    presets = module.Config.PRESETS
    assert presets and any(label == "synthetic" for label in presets)
    helps = flag_helps(module.get_args_parser())
    defaults = {field.name: field.default for field in dataclasses.fields(module.Config)}
    shown = 0
    for label, values in presets.items():
        for key, value in values.items():
            if defaults.get(key, "missing") is not None:
                continue  # a preset key without a None flag: nothing to show
            line = helps["--" + key.replace("_", "-")]
            assert config_lib._show(value) in line and (label in line or "default:" in line), (key, line)
            shown += 1
    assert shown >= 6


def test_imagenet_help_is_the_preset_not_drifted_prose():
    module = load_recipe("imagenet")
    helps = flag_helps(module.get_args_parser())
    assert module.SYNTHETIC_DEFAULTS["warmup_epochs"] == 0.5 and module.SYNTHETIC_DEFAULTS["ema"] == 0.9
    assert helps["--warmup-epochs"].endswith("(default: the schedule's; synthetic: 0.5)")
    assert helps["--ema"].endswith("(default: the schedule's; synthetic: 0.9)")
    assert helps["--image-size"] == "input resolution (synthetic: 64; real data: 224)"
    assert helps["--alpha"] == "width multiplier (default: 1.0)"
    assert "synthetic 1" not in module.get_args_parser().format_help()


def test_presets_group_equal_values_and_read_required():
    helps = flag_helps(load_recipe("segmentation").get_args_parser())
    assert helps["--crop-size"].endswith("(cityscapes: 768; voc, folder: 512; synthetic: 128)")
    assert helps["--eval-height"].endswith("(cityscapes: 1024; voc: 512; folder: required; synthetic: 128)")
    assert helps["--head"].endswith("(cityscapes, folder, synthetic: lraspp; voc: raspp)")
    assert helps["--global-batch-size"] == "batch over all replicas (default: 16)"  # every preset agrees
    helps = flag_helps(load_recipe("facenet_distill").get_args_parser())
    assert "{adagrad,adam,sgd}" in load_recipe("facenet_distill").get_args_parser().format_help()
    assert helps["--optimizer"].endswith("(real data: adagrad; synthetic: adam)")


def test_get_args_parser_takes_presets_and_escapes_percent():
    @dataclasses.dataclass
    class Small:
        """A small config."""

        size: int = config_lib.field(None, "side, 100% of the crop")
        steps: int = config_lib.field(None, "steps", default_text="the data's length")
        flag: bool = config_lib.field(True, "a switch")

    parser = config_lib.get_args_parser(Small, presets={"big": {"size": 224}, "tiny": {"size": 32, "steps": 5}})
    helps = flag_helps(parser)
    assert helps == {"--size": "side, 100% of the crop (big: 224; tiny: 32)",
                     "--steps": "steps (default: the data's length; tiny: 5)",
                     "--flag": "a switch (default: yes)", "-h": "show this help message and exit"}
    assert "give the flag to override it" in parser.format_help()
    assert vars(parser.parse_args(["--no-flag"])) == dict(size=None, steps=None, flag=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--si", "3"])
    assert isinstance(parser, argparse.ArgumentParser)



@pytest.mark.parametrize("backbone, alpha", [("shufflenet_v2_x0_5", 1.0), ("squeezenet1_1", 1.0), ("v1", 0.5)])
def test_facenet_synthetic_preset_width_applies_to_mobilenets_only(backbone, alpha):
    """The synthetic preset's half-width student is a MobileNet setting: a family with
    its width in its name (or none) resolves to alpha 1.0; an explicit other width for
    it is refused while resolving, before any work."""
    recipe = load_recipe("facenet_distill")
    assert recipe.resolve(recipe.Config(backbone=backbone)).alpha == alpha
    if alpha == 1.0:
        with pytest.raises(ValueError, match="`alpha` applies to"):
            recipe.resolve(recipe.Config(backbone=backbone, alpha=0.5))
