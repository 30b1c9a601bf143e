"""`onnxprune bench`: latency of one model, or of two timed interleaved with the speed-up."""
from __future__ import annotations

import argparse
import json

from ..analysis.cost import count_model_cost
from ..loading import check_supported, read_model
from ..validation.bench import bench, bench_lines
from .files import check_output, write_text
from .options import add_runtime, add_timing, parse_batches, parse_shapes
from .progress import progress


def add_parser(sub) -> None:
    """Register the subcommand."""
    b = sub.add_parser("bench", help="latency and throughput of a model, or of two with the speed-up")
    b.add_argument("model")
    b.add_argument("other", nargs="?", help="a second model, timed interleaved with the first")
    b.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's dynamic dims")
    add_timing(b)
    add_runtime(b)
    b.add_argument("--json", metavar="FILE", help="write the timings as JSON")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Latency of one model, or of two interleaved with the speed-up."""
    check_output(args.json, "--json")
    models = [args.model] + ([args.other] if args.other else [])
    for m in models:  # the loader's own checks (not ONNX, external data missing) before onnxruntime's
        check_supported(read_model(m)[0], m)
    progress(f"timing {len(models)} model(s) on {args.provider}")
    report = bench(models, parse_batches(args.batch), args.warmup, args.runs, args.provider, args.threads,
                   parse_shapes(args.shape))
    timed = next(iter(report["batches"].values()))["shapes"]
    one = {k: (1, *v[1:]) for k, v in timed.items()}  # one sample of the shape timed
    costs = [count_model_cost(m, one) for m in models]
    report["models"] = [{"path": m, "params": c.params, "macs_per_sample": c.macs} for m, c in zip(models, costs)]
    print(bench_lines(report, models))
    at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in one.items())
    if len(costs) == 2:
        print(f"  MACs per sample at {at}: {costs[0].macs:,} -> {costs[1].macs:,}: "
              f"{costs[0].macs / max(costs[1].macs, 1):.3f}x fewer")
    else:
        print(f"  MACs per sample at {at}: {costs[0].macs:,}")
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


