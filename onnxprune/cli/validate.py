"""`onnxprune validate`: compare a pruned model with its original on the same inputs."""
from __future__ import annotations

import argparse
import json

from ..analysis.cost import count_model_cost
from ..validation.validate import validate, validation_lines
from .files import check_output, write_text
from .options import add_gate, add_inputs, add_runtime, add_task, gate, inputs_from, parse_shapes, tasks_from
from .progress import progress


def add_parser(sub) -> None:
    """Register the subcommand."""
    v = sub.add_parser("validate", help="compare a pruned model with its original on the same inputs")
    v.add_argument("original")
    v.add_argument("pruned")
    add_inputs(v)
    add_task(v)
    add_gate(v)
    add_runtime(v)
    v.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    v.add_argument("--json", metavar="FILE", help="write the validation report as JSON")
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compare ORIGINAL and PRUNED on the same inputs; exit 1 below the bar."""
    check_output(args.json, "--json")
    tasks = tasks_from(args)
    progress(f"running both models on {args.provider}")
    report = validate(args.original, args.pruned, inputs_from(args), args.provider, args.threads, tasks)
    ran_at = report["inputs"].get("shapes") or report["inputs"].get("sample_shapes") or {}
    dims = {k: (1, *v[1:]) for k, v in ran_at.items()} or parse_shapes(args.shape)  # MACs per sample, as run
    before, after = (count_model_cost(m, dims) for m in (args.original, args.pruned))
    report["cost"] = {"params_before": before.params, "params_after": after.params,
                      "macs_before": before.macs, "macs_after": after.macs}
    print(validation_lines(report))
    print(f"  parameters {before.params:,} -> {after.params:,}, MACs {before.macs:,} -> {after.macs:,} "
          f"({1 - after.macs / max(before.macs, 1):.1%} fewer)")
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    gate(report, args)
    return 0


