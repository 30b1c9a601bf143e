"""The console entry point: Ctrl-C is handled before the heavy imports (onnx, numpy) start."""
from __future__ import annotations

import sys


def main() -> int:
    """`onnxprune ...`: the CLI, or exit 130 with one line when interrupted while it loads."""
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    return cli_main()
