"""Speed targets asked against speed-ups measured, with an A/A control, appended to docs/latency.md.

    python tools/speed_table.py [--model models/fashion/vgg_bnkeep.onnx] [--targets 1.25,1.5,2] [--batch 32]
        [--provider cpu] [--methods bisection,latency-model,latency-model-iterative] [--out docs/latency.md]

bisection: `speed_search`, what `prune --target-speedup` runs with the default allocation (l1, --global,
--round-to 8, plain removal). latency-model: what `prune --allocate sensitivity --target-speedup` runs
(each group's loss curve on the 256 calibration images and its latency saving measured alone, the
allocation made on both, rounds of timing correcting it); latency-model-iterative: the same with
`--allocate iterative` (each step's loss measured with all earlier steps removed). The chosen model is then timed again in a
fresh interleaved run of 100 (the figure in the table) and scored on the 500 shipped test images; the
original against itself (A/A) shows what noise alone gives.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort

from onnxprune.api import run_pipeline, sensitivity_allocation, speed_search
from onnxprune.calibration import Calibration
from onnxprune.loading import prepare
from onnxprune.rewrite.merging import MergeOptions
from onnxprune.selection import Selection
from onnxprune.validation.bench import bench
from onnxprune.search.stopwatch import SpeedTarget
from onnxprune.validation.validate import Inputs

CALIB, TEST, LABELS = "models/fashion/calib256.npz", "models/fashion/test500.npz", "models/fashion/test500_labels.npy"


def speedup(models: list, batch: int, provider: str) -> float:
    report = bench(models, (batch,), warmup=10, runs=100, provider=provider)
    return float(next(iter(report["batches"].values()))["speedup"])


def accuracy(model_bytes: bytes) -> float:
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    x, y = np.load(TEST), np.load(LABELS)
    x = x[x.files[0]]
    logits = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 100]})[0]
                             for i in range(0, len(x), 100)])
    return float((logits.argmax(1) == y).mean())


def by_bisection(args, target: float):
    """(pruned model, MAC share removed, the search's own speed-up, timed steps) by the MAC bisection."""
    sel = Selection(target_macs=0.5, global_rank=True, round_to=8)
    r, record = speed_search(args.model, sel, target_speedup=target, merge=MergeOptions(compensate="none"),
                             provider=args.provider, batch=args.batch, progress=print)
    return r, record["chosen"]["speedup"], len(record["steps"])


def by_latency_model(args, target: float, method: str = "curves"):
    """The same through the per-group latency model and the sensitivity (or iterative) allocation."""
    sel, merge = Selection(target_macs=0.5, round_to=8), MergeOptions(compensate="none")
    speed = SpeedTarget(speedup=target, provider=args.provider, batch=args.batch)
    chosen, record, _ = sensitivity_allocation(args.model, sel, "l1", Inputs(data=CALIB, batch=64), merge,
                                               provider=args.provider, ratios=(0.25, 0.5, 0.75), progress=print,
                                               method=method, speed=speed)
    r = run_pipeline(prepare(args.model), None, None, "l1", chosen, merge=merge, calibration=Calibration(CALIB))
    st = record["speed_target"]
    return r, st["chosen"]["speedup"], f"{len(st['latency_model']['points'])} + {len(st['steps'])}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/fashion/vgg_bnkeep.onnx")
    ap.add_argument("--targets", default="1.25,1.5,2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--methods", default="bisection,latency-model")
    ap.add_argument("--out", default="docs/latency.md")
    args = ap.parse_args()
    rows, start = [], time.time()
    aa = speedup([args.model, args.model], args.batch, args.provider)
    base = accuracy(open(args.model, "rb").read())
    methods = {"bisection": by_bisection, "latency-model": by_latency_model,
               "latency-model-iterative": lambda a, t: by_latency_model(a, t, "iterative")}
    for target in (float(t) for t in args.targets.split(",")):
        for name in args.methods.split(","):
            r, searched, steps = methods[name](args, target)
            again = speedup([args.model, r.model.SerializeToString()], args.batch, args.provider)
            cut = 1 - r.after.macs / r.analysis.cost.macs
            rows.append(f"| {target:.2f}x | {name} | {cut:.1%} | {searched:.2f}x | {again:.2f}x | "
                        f"{(again - target) / target:+.0%} | {accuracy(r.model.SerializeToString()):.1%} | {steps} |")
            print(rows[-1], flush=True)
    text = (f"\n## Speed targets: asked against measured ({time.strftime('%Y-%m-%d')})\n\n"
            f"`python tools/speed_table.py --model {args.model} --batch {args.batch} --provider {args.provider} "
            f"--methods {args.methods}` ({time.time() - start:.0f} s, {os.cpu_count()} cores). The search's "
            "own timing chose the model (bisection: median of 20 interleaved runs per step; latency model: "
            "fastest of at least 20 interleaved runs per timed prune, steps = single-group prunes timed + "
            "rounds); the chosen model was then timed again in 100 interleaved runs (median). A/A control "
            f"(the original against itself, 100 runs): {aa:.3f}x. Accuracy on the 500 shipped test images "
            f"(the original: {base:.1%}); plain removal, no re-fit, so the allocation's share of the loss shows.\n\n"
            "| target | method | MACs removed | speed-up in the search | speed-up measured again | off the target "
            "| accuracy | steps |\n|---|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    with open(args.out, "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
