"""The CLI reference (docs/cli.md), rendered from the parsers themselves so that it cannot drift."""
from __future__ import annotations

import argparse


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's %-placeholders filled in, as --help prints it."""
    text = action.help or ""
    if "%" in text:
        params = {**vars(action), "prog": prog}
        params = {k: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) and k == "choices" else v
                  for k, v in params.items()}
        text = text % params
    return _cell(text)


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument: its name alone
        return f"`{(action.metavar or action.dest).upper()}`" + (" (optional)" if action.nargs == "?" else "")
    names = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices is not None:
        return f"{names} {{{','.join(map(str, action.choices))}}}"
    value = action.metavar or action.dest.upper()
    return f"{names} {value}"


def _default(action: argparse.Action) -> str:
    if action.option_strings == [] or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _command(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    lines = [f"## `onnxprune {name}`", "", _cell(parser.description or summary), ""]
    for group in parser._action_groups:  # argparse keeps the groups and their titles only here
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"**{_cell(group.title or 'options')}**" + (f": {_cell(group.description)}"
                                                              if group.description else ""), "",
                  "| argument | default | meaning |", "|---|---|---|"]
        lines += [f"| {_flag(a)} | {_default(a)} | {_help(a, parser.prog)} |" for a in actions]
        lines.append("")
    return lines


def render(parser: argparse.ArgumentParser) -> str:
    """Markdown: every command, its argument groups, each argument's value, default and meaning."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    lines = ["# Command-line reference", "",
             "Generated from the parsers by `python tools/cli_reference.py`; do not edit by hand (a test compares "
             "this page with the parsers). Back to the [README](../README.md).", "",
             _cell(parser.description or ""), "", _cell(parser.epilog or ""), ""]
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{n}`](#onnxprune-{n}) | {_cell(summaries.get(n, ''))} |" for n in sub.choices]
    lines.append("")
    for name, command in sub.choices.items():
        lines += _command(name, command, summaries.get(name, ""))
    return "\n".join(lines).rstrip() + "\n"
