"""docs/cli.md is what the parsers say: every command, every flag, its default and help."""
from __future__ import annotations

import argparse

from conftest import ROOT
from onnxprune.cli import build_parser
from onnxprune.cli.reference import render


def test_reference_matches_the_parsers() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render(build_parser()), \
        "docs/cli.md is stale: run python tools/cli_reference.py"


def test_reference_names_every_flag() -> None:
    """Each option string of each command stands in the reference (a renderer that dropped one fails)."""
    text = render(build_parser())
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        section = text.split(f"## `onnxprune {name}`", 1)[1].split("\n## ", 1)[0]
        for action in (a for a in command._actions if not isinstance(a, argparse._HelpAction)):
            for flag in action.option_strings:
                assert f"`{flag}`" in section, f"{name} {flag}"
