"""Command line: `onnxprune analyze | prune | recover | validate | bench | sensitivity`, one module per command."""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import NothingToDo, OnnxPruneError
from ..runtime import providers
from ..validation.validate import GateFailed
from . import analyze, bench, progress, prune, recover, sensitivity, validate
from .files import check_paths

EXIT_GATE, EXIT_REFUSED, EXIT_INTERNAL, EXIT_NOOP, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
COMMANDS = (analyze, prune, recover, validate, bench, sensitivity)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (the CLI reference in docs/cli.md is generated from it)."""
    p = argparse.ArgumentParser(prog="onnxprune", description="Structured channel pruning of ONNX models.",
                                epilog="exit codes: 0 ok, 1 validation gate failed, 2 refused (bad input or "
                                       "options; one line on stderr), 3 internal error, 4 nothing to prune "
                                       "(see --allow-noop), 130 interrupted")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
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
        return args.func(args)
    except KeyboardInterrupt:  # outputs are written atomically, so nothing partial is left
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GateFailed as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_GATE
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

