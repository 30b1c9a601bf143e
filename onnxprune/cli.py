"""Command line: `onnxprune analyze` and `onnxprune prune`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .analysis.analyze import build_analysis
from .analysis.cost import resolve_input_dims
from .errors import OnnxPruneError
from .loading import check_file, prepare, save_model
from .plan import check_plan, load_plan
from .report import analysis_table
from .rewrite.rewriter import rewrite


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


def _check_shape_names(graph, shapes: dict[str, tuple[int, ...]]) -> None:
    names = {t.name for t in graph.inputs}
    for name in shapes:
        if name not in names:
            raise OnnxPruneError(f"--shape names '{name}', which is not a model input ({', '.join(sorted(names))})")


def cmd_analyze(args: argparse.Namespace) -> int:
    """Print the group table; write the JSON report if asked."""
    prep = prepare(args.model)
    shapes = parse_shapes(args.shape)
    _check_shape_names(prep.graph, shapes)
    analysis = build_analysis(prep, shapes)
    print(analysis_table(analysis, show_frozen=not args.prunable_only))
    if args.json:
        Path(args.json).write_text(json.dumps(analysis.to_json(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Apply a plan, vouch for the result, then write it."""
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise OnnxPruneError("the output path is the input model: the input is never overwritten")
    plan = load_plan(args.plan)
    prep = prepare(args.model)
    shapes = parse_shapes(args.shape)
    _check_shape_names(prep.graph, shapes)
    analysis = build_analysis(prep, shapes)
    removed = check_plan(plan, analysis)
    dims = resolve_input_dims(prep.graph, shapes)
    model = rewrite(prep, analysis, removed)
    after = build_analysis(prepare(model), shapes).cost

    def verify(path: Path) -> None:
        """Vouch for the bytes written: full check (from the file, so >2 GB works) and a run."""
        check_file(path)
        if not args.no_verify:
            from .validation.smoke import smoke_check

            smoke_check(str(args.model), str(path), dims)

    written = save_model(model, args.output, external_data=prep.external_data or None, verify=verify)
    before = analysis.cost
    print(f"removed {sum(map(len, removed.values()))} channels in {len(removed)} groups; "
          f"parameters {before.params:,} -> {after.params:,} ({1 - after.params / max(before.params, 1):.1%} fewer), "
          f"MACs {before.macs:,} -> {after.macs:,} ({1 - after.macs / max(before.macs, 1):.1%} fewer)")
    print("wrote " + ", ".join(written))
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
    r.add_argument("--plan", required=True, metavar="PLAN.json", help="apply this plan exactly")
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
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, unless debugging
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
