"""`onnxprune analyze`: the channel groups of a model, which are prunable and why the rest are not."""
from __future__ import annotations

import argparse
import json

from ..analysis.analyze import build_analysis
from ..analysis.residual import graph_blocks
from ..loading import prepare
from ..report import analysis_json, analysis_table, blocks_json, blocks_table
from .files import check_output, write_text
from .options import parse_shapes


def add_parser(sub) -> None:
    """Register the subcommand."""
    a = sub.add_parser("analyze", help="find channel dependency groups and say which are prunable")
    a.add_argument("model")
    a.add_argument("--json", metavar="FILE", help="write the full analysis as JSON")
    a.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's shape for MAC counts")
    a.add_argument("--prunable-only", action="store_true", help="list prunable groups only")
    a.add_argument("--blocks", action="store_true", help="also list the residual blocks (x + f(x)): kind, "
                   "parameters, the branch's MACs, and whether the block can be removed whole (prune --drop-blocks) "
                   "or why not; the JSON gets a 'blocks' list")
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the group table (and the residual blocks); write the JSON report if asked."""
    check_output(args.json, "--json")
    prep, shapes = prepare(args.model), parse_shapes(args.shape)
    analysis = build_analysis(prep, shapes)
    print(analysis_table(analysis, show_frozen=not args.prunable_only))
    blocks = blocks_json(analysis, graph_blocks(prep, shapes)) if args.blocks else None
    if blocks is not None:
        print()
        print(blocks_table(blocks))
    if args.json:
        data = analysis_json(analysis)
        if blocks is not None:
            data["blocks"] = blocks
        write_text(args.json, json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
