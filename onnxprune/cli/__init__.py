"""Command line: `onnxprune analyze | prune | recover | validate | bench | sensitivity`, one module per command."""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

from .. import __version__
from ..errors import NothingToDo, OnnxPruneError, TargetMissed
from ..runtime import providers
from ..validation.validate import GateFailed
from . import analyze, bench, progress, prune, recover, sensitivity, validate
from .files import check_paths, undo_new_folders

EXIT_GATE, EXIT_REFUSED, EXIT_INTERNAL, EXIT_NOOP, EXIT_MISSED, EXIT_INTERRUPTED = 1, 2, 3, 4, 5, 130
COMMANDS = (analyze, prune, recover, validate, bench, sensitivity)


NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # what argparse reads as a negative number, not an option


class UsageError(OnnxPruneError):
    """A mistake on the command line (exit 2, one line, like any refusal)."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line naming --help, not the usage; unknown options come first."""

    argv: tuple[str, ...] = ()

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        """Parse, remembering the arguments (for error()); anything left over is a mistake here already."""
        self.argv = tuple(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # said by the subcommand's parser, which knows the options a typo was meant to be
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str):  # noqa: ANN201 - never returns
        """Raise the mistake as one line; an unknown option is named first, whatever argparse noticed first."""
        unknown = self.unknown_option()
        if unknown:
            near = difflib.get_close_matches(unknown, [o for o in self._option_string_actions if o.startswith("--")], 1)
            message = f"unrecognized option {unknown}" + (f" (did you mean {near[0]}?)" if near else "")
        raise UsageError(f"{message} (see {self.prog} --help)")

    def unknown_option(self) -> str | None:
        """The first argument that looks like an option and is none of this parser's (nor a prefix of one)."""
        for arg in self.argv:
            if arg == "--" or (self._subparsers is not None and not arg.startswith("-")):
                return None  # positionals from here on, or the subcommand's own arguments
            name = arg.split("=", 1)[0]
            if not arg.startswith("-") or arg == "-" or NUMBER.match(arg) or self.knows(name):
                continue
            return name
        return None

    def knows(self, name: str) -> bool:
        """An option of this parser, an unambiguous or ambiguous prefix of one, or a short one with its value."""
        options = self._option_string_actions
        if name.startswith("--"):
            return any(o.startswith(name) for o in options)
        return name[:2] in options


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (the CLI reference in docs/cli.md is generated from it)."""
    p = OneLineParser(prog="onnxprune", description="Structured channel pruning of ONNX models.",
                      epilog="exit codes: 0 ok, 1 validation gate failed, 2 refused (bad input or "
                             "options; one line on stderr), 3 internal error, 4 nothing to prune "
                             "(see --allow-noop), 5 speed target not reached, 130 interrupted")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
        command.add_argument("--verbose", action="store_true", help="let onnxruntime's own log lines and warnings "
                             "through (they are kept quiet otherwise)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a documented exit code."""
    try:
        args = build_parser().parse_args(argv)
        progress.QUIET = getattr(args, "quiet", False)
        providers.VERBOSE = getattr(args, "verbose", False)
        check_paths(args)
        with undo_new_folders(args.output if args.command in ("prune", "recover") else None):
            return args.func(args)
    except KeyboardInterrupt:  # outputs are written atomically, so nothing partial is left
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GateFailed as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_GATE
    except TargetMissed as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_MISSED
    except NothingToDo as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_NOOP
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, unless debugging
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return EXIT_INTERNAL

