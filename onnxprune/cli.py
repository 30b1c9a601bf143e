"""Command line: `onnxprune analyze` and `onnxprune prune`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .analysis.analyze import build_analysis
from .api import replay_options, run_pipeline
from .rewrite.merging import MergeOptions
from .errors import OnnxPruneError
from .loading import prepare, save_model
from .plan import load_plan, save_plan
from .report import analysis_table, group_lines, prune_report, summary
from .scoring import CRITERIA
from .scoring.score import AGGREGATE
from .selection import Selection
from .selection.overrides import load_overrides
from .validation.smoke import smoke_check


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` -> {name: (1, 3, 224, 224)}."""
    shapes = {}
    for item in items or []:
        name, _, dims = item.rpartition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise OnnxPruneError(f"--shape {item!r}: expected NAME:D1xD2x..., e.g. input:1x3x224x224") from None
        if not name:
            raise OnnxPruneError(f"--shape {item!r}: missing the input name")
    return shapes


def cmd_analyze(args: argparse.Namespace) -> int:
    """Print the group table; write the JSON report if asked."""
    analysis = build_analysis(prepare(args.model), parse_shapes(args.shape))
    print(analysis_table(analysis, show_frozen=not args.prunable_only))
    if args.json:
        Path(args.json).write_text(json.dumps(analysis.to_json(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _progress(message: str) -> None:
    """Stage progress on an interactive terminal only, so pipelines keep clean streams."""
    if sys.stderr.isatty():
        print(f"[onnxprune] {message}", file=sys.stderr, flush=True)


def _selection(args: argparse.Namespace) -> Selection:
    overrides = load_overrides(args.overrides) if args.overrides else {}
    return Selection(args.ratio, args.global_rank, args.target_macs, args.target_params, args.round_to,
                     args.min_channels, args.max_ratio, list(args.exclude or []), overrides)


MERGE_FLAGS = ("compensate", "merge_threshold", "merge_lambda", "merge_mode", "merge_order", "merge_approximate",
               "fold_tolerance")


def cmd_prune(args: argparse.Namespace) -> int:
    """Plan (from a file or a criterion), rewrite, vouch for the written file, report."""
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise OnnxPruneError("the output path is the input model: the input is never overwritten")
    plan = load_plan(args.plan) if args.plan else None
    selection = None if plan else _selection(args)
    if selection:
        selection.check()
    given = {k: v for k in MERGE_FLAGS if (v := getattr(args, k)) is not None}
    merge = replay_options(plan, **given) if plan else MergeOptions.from_keywords(**given)
    shapes = parse_shapes(args.shape)
    _progress("loading")
    prep = prepare(args.model)
    _progress(f"analyzing {len(prep.graph.nodes)} nodes, " + (f"replaying {args.plan}" if plan else
                                                              f"scoring by {args.criterion}, rewriting"))
    r = run_pipeline(prep, shapes, plan, args.criterion, selection, args.include_consumers, args.aggregate, args.seed,
                     merge)
    dims = r.analysis.cost.input_dims

    def verify(path: Path) -> None:
        """Vouch for the bytes written: they load and run in onnxruntime like the original."""
        if not args.no_verify:
            _progress("running the written model in onnxruntime")
            smoke_check(str(args.model), str(path), r.model, dims)

    written = save_model(r.model, args.output, external_data=prep.external_data or None, verify=verify)
    sizes = (sum(p.stat().st_size for p in prep.files), sum(Path(p).stat().st_size for p in written))
    report = prune_report(r.analysis, r.after, r.removed, r.scores, sizes, r.compensation)
    print(summary(report))
    print(group_lines(report))
    if args.save_plan:
        save_plan(r.plan, args.save_plan)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print("wrote " + ", ".join(written + [p for p in (args.save_plan, args.report) if p]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxprune", description="Structured channel pruning of ONNX models.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="find channel dependency groups and say which are prunable")
    a.add_argument("model")
    a.add_argument("--json", metavar="FILE", help="write the full analysis as JSON")
    a.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's shape for MAC counts")
    a.add_argument("--prunable-only", action="store_true", help="list prunable groups only")
    a.set_defaults(func=cmd_analyze)
    r = sub.add_parser("prune", help="remove channels and write a smaller model")
    r.add_argument("model")
    r.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--plan", metavar="PLAN.json", help="replay this plan exactly")
    how.add_argument("--ratio", type=float, help="fraction of channels to remove from every prunable group")
    how.add_argument("--target-macs", type=float, metavar="F", help="fraction of MACs to remove (global ranking)")
    how.add_argument("--target-params", type=float, metavar="F", help="fraction of parameters to remove")
    r.add_argument("--criterion", default="l1", choices=CRITERIA, help="channel importance (default l1)")
    r.add_argument("--global", dest="global_rank", action="store_true", help="rank channels of all groups together")
    r.add_argument("--round-to", type=int, default=1, metavar="N", help="kept channel counts are multiples of N")
    r.add_argument("--min-channels", type=int, default=1, metavar="N", help="never keep fewer channels per group")
    r.add_argument("--max-ratio", type=float, default=1.0, metavar="R", help="never remove more of one group")
    r.add_argument("--exclude", action="append", metavar="GLOB", help="leave the output channels of these nodes (globs)")
    r.add_argument("--overrides", metavar="FILE", help="JSON or YAML: node-name glob -> ratio")
    r.add_argument("--include-consumers", action="store_true", help="score consumers' input slices too")
    r.add_argument("--aggregate", default="mean", choices=list(AGGREGATE), help="combine a group's members")
    r.add_argument("--seed", type=int, default=0, help="seed of the random criterion")
    c = r.add_argument_group("compensation of removed channels (neuron merging); with --plan, the plan's "
                             "recorded options unless given here")
    c.add_argument("--compensate", choices=["merge", "fold", "none"],
                   help="merge: fold each removed filter into a similar kept one's consumers, and constant "
                        "channels into their biases; fold: constant channels only; none: plain pruning (default merge)")
    c.add_argument("--merge-threshold", type=float, metavar="T",
                   help="minimum cosine similarity of [filter | bias] for a merge (default 0.3)")
    c.add_argument("--merge-lambda", type=float, metavar="L",
                   help="rank matches by L * cosine distance + (1 - L) * normalised bias residual (default 0.85)")
    c.add_argument("--merge-mode", choices=["exact", "paper"],
                   help="BatchNorm factor: exact, or the authors' released code's, for comparison (default exact)")
    c.add_argument("--merge-order", choices=["original", "sequential"],
                   help="match each group on its original filters (the authors' code) or on the filters left "
                        "after earlier groups' merges and removals (default original)")
    c.add_argument("--merge-approximate", action="store_true", default=None,
                   help="also merge through SiLU, HardSwish, Sigmoid, GELU... (not exact; reported)")
    c.add_argument("--fold-tolerance", type=float, metavar="F",
                   help="treat channels with |gamma|/sigma (or filter norm) <= F x the layer's max as constant "
                        "(default 0)")
    r.add_argument("--save-plan", metavar="FILE", help="write the plan that was applied")
    r.add_argument("--report", metavar="FILE", help="write the before/after report as JSON")
    r.add_argument("--shape", action="append", metavar="NAME:DIMS", help="input shape for the check run and MACs")
    r.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check run")
    r.set_defaults(func=cmd_prune)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, unless debugging
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
