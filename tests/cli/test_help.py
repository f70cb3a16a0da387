"""`--help` of every command: each option explained, and its default shown."""

from __future__ import annotations

import argparse

from diffuse.cli import build_parser


def parsers(parser: argparse.ArgumentParser, name: str = "diffuse"):
    """``(name, parser)`` of ``parser`` and of every sub-command below it, at any depth."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from parsers(sub, f"{name} {command}")


def shows_default(action: argparse.Action) -> bool:
    return action.default not in (None, False, [], argparse.SUPPRESS)


def test_every_option_of_every_command_is_explained_with_its_default():
    walked = []
    for name, parser in parsers(build_parser()):
        walked.append(name)
        formatter = parser._get_formatter()  # the text --help prints for each option
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{what} has no help"
            if action.option_strings and shows_default(action):
                default = f"(default: {action.default})"
                assert default in formatter._expand_help(action), f"{what} lacks {default}"
    assert {"diffuse sample", "diffuse figures interpolate", "diffuse convert openai"} < set(
        walked
    )  # the nested commands too


def test_the_step_spacing_rule_is_in_the_help_of_every_sampling_command():
    for name, parser in parsers(build_parser()):
        if any("--steps" in action.option_strings for action in parser._actions) and (
            "train" not in name
        ):
            text = " ".join(parser.format_help().split())
            assert "a bare count N: quadN for dpm++2m" in text, name
