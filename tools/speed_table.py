"""Speed targets asked against speed-ups measured, with an A/A control, appended to docs/latency.md.

    python tools/speed_table.py [--model models/fashion/vgg_bnkeep.onnx] [--targets 1.25,1.5,2] [--batch 32]
        [--provider cpu] [--out docs/latency.md]

Each target runs `speed_search` (the bisection `prune --target-speedup` runs; l1, --global, --round-to 8,
plain removal), then the chosen model is timed again in a fresh interleaved run of 100 (the figure in
the table), and the original against itself (A/A) shows what noise alone gives.
"""
from __future__ import annotations

import argparse
import os
import time

from onnxprune.api import speed_search
from onnxprune.rewrite.merging import MergeOptions
from onnxprune.selection import Selection
from onnxprune.validation.bench import bench


def speedup(models: list, batch: int, provider: str) -> float:
    report = bench(models, (batch,), warmup=10, runs=100, provider=provider)
    return float(report["batches"][batch]["speedup"]) if batch in report["batches"] else \
        float(next(iter(report["batches"].values()))["speedup"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/fashion/vgg_bnkeep.onnx")
    ap.add_argument("--targets", default="1.25,1.5,2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--out", default="docs/latency.md")
    args = ap.parse_args()
    rows, start = [], time.time()
    aa = speedup([args.model, args.model], args.batch, args.provider)
    for target in (float(t) for t in args.targets.split(",")):
        sel = Selection(target_macs=0.5, global_rank=True, round_to=8)
        r, record = speed_search(args.model, sel, target_speedup=target, merge=MergeOptions(compensate="none"),
                                 provider=args.provider, batch=args.batch, progress=print)
        again = speedup([args.model, r.model.SerializeToString()], args.batch, args.provider)
        cut = 1 - r.after.macs / r.analysis.cost.macs
        rows.append(f"| {target:.2f}x | {cut:.1%} | {record['chosen']['speedup']:.2f}x | {again:.2f}x | "
                    f"{(again - target) / target:+.0%} | {len(record['steps'])} |")
        print(rows[-1], flush=True)
    text = (f"\n## Speed targets: asked against measured ({time.strftime('%Y-%m-%d')})\n\n"
            f"`python tools/speed_table.py --model {args.model} --batch {args.batch} --provider {args.provider}` "
            f"({time.time() - start:.0f} s, {os.cpu_count()} cores). The search's own measurement (20 interleaved "
            "runs per step) chose the cut; the chosen model was then timed again in 100 interleaved runs. "
            f"A/A control (the original against itself, 100 runs): {aa:.3f}x.\n\n"
            "| target | MACs removed | speed-up in the search | speed-up measured again | off the target | steps |\n"
            "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    with open(args.out, "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
