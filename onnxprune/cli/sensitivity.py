"""`onnxprune sensitivity`: prune each group alone at a ladder of ratios and measure what it costs."""
from __future__ import annotations

import argparse
import json

from ..errors import OnnxPruneError
from ..rewrite.merging import MergeOptions
from ..scoring import CRITERIA
from ..scoring.score import DATA_CRITERIA
from ..search.plots import plot_sensitivity, pyplot
from ..search.sensitivity import RATIOS, sensitivity
from .files import check_output, write_text
from .options import (CRITERION_HELP, MERGE_FLAGS, add_inputs, add_merge_flags, add_runtime, add_task, inputs_from,
                      tasks_from)
from .progress import progress, warn


def add_parser(sub) -> None:
    """Register the subcommand."""
    s = sub.add_parser("sensitivity", help="prune each group alone at a ladder of ratios and measure the cost",
                       description="Prune each prunable group alone at each ratio (ranked by --criterion, "
                                   "compensated as prune does) and record the worst output's cosine, relative L2 "
                                   "error, top-1 agreement (a classifier) or neighbour agreement (an embedding) "
                                   "against the original, or accuracy with --labels. "
                                   "Progress: one line per group on stderr, with the time left.")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, metavar="FILE.json", help="where to write the curves")
    s.add_argument("--plot", metavar="FILE.png", help="also draw the curves (needs matplotlib)")
    s.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS), metavar="R1,R2",
                   help="fractions of each group's channels to remove, each strictly between 0 and 1 "
                        "(default %(default)s)")
    s.add_argument("--criterion", default="l1", choices=[c for c in CRITERIA if c not in DATA_CRITERIA],
                   help=CRITERION_HELP + " (default l1; the data-driven ones are prune's)")
    add_inputs(s, labels="; the curves are then accuracy instead of cosine")
    add_task(s)
    add_runtime(s)
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the random inputs and of --criterion random (default 0)")
    add_merge_flags(s, "compensation of removed channels (as for prune)", calibrated=False)
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune each group alone at each ratio; JSON (and a plot) of what each costs."""
    check_output(args.output, "-o")
    check_output(args.plot, "--plot")
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
        raise OnnxPruneError(f"--ratios {args.ratios!r}: expected fractions, e.g. 0.1,0.3,0.5") from None
    if args.plot:
        pyplot()  # fail before the long run, not after it
    given = {k: v for k in MERGE_FLAGS if (v := getattr(args, k)) is not None}
    report = sensitivity(args.model, ratios, args.criterion, inputs_from(args), args.provider,
                         MergeOptions.from_keywords(**given), progress=progress, threads=args.threads,
                         tasks=tasks_from(args))
    write_text(args.output, json.dumps(report, indent=1) + "\n")
    for w in report["warnings"]:
        warn(w)
    metric = report["metric"]
    width = max([0, *(len(g["id"]) for g in report["groups"])])
    for g in report["groups"]:
        print(f"  {g['id']:<{width}} " + "  ".join(f"{p['ratio']:g}:{p[metric]:.4f}" for p in g["points"]))
    written = [args.output]
    if args.plot:
        plot_sensitivity(report, args.plot)
        written.append(args.plot)
    print(f"{metric} per group and ratio; wrote " + ", ".join(written))
    return 0


