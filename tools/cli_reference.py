"""Write docs/cli.md, the command-line reference, from the parsers (tests/test_cli_reference.py checks it).

    python tools/cli_reference.py [--out docs/cli.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli import build_parser
from onnxprune.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "cli.md"))
    out = Path(ap.parse_args().out)
    out.write_text(render(build_parser()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
