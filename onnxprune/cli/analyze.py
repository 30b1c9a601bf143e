"""`onnxprune analyze`: the channel groups of a model, which are prunable and why the rest are not."""
from __future__ import annotations

import argparse
import json

from ..analysis.analyze import build_analysis
from ..loading import prepare
from ..report import analysis_json, analysis_table
from .files import check_output, write_text
from .options import parse_shapes


def add_parser(sub) -> None:
    """Register the subcommand."""
    a = sub.add_parser("analyze", help="find channel dependency groups and say which are prunable")
    a.add_argument("model")
    a.add_argument("--json", metavar="FILE", help="write the full analysis as JSON")
    a.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's shape for MAC counts")
    a.add_argument("--prunable-only", action="store_true", help="list prunable groups only")
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the group table; write the JSON report if asked."""
    check_output(args.json, "--json")
    analysis = build_analysis(prepare(args.model), parse_shapes(args.shape))
    print(analysis_table(analysis, show_frozen=not args.prunable_only))
    if args.json:
        write_text(args.json, json.dumps(analysis_json(analysis), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0

