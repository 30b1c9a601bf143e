"""Speed and memory of a whole prune against the floor of onnx.load + onnx.save of the same file.

    python tools/bench_prune.py MODEL.onnx [--runs 3] [--out docs/bench_prune.md]
    python tools/bench_prune.py MODEL.onnx --criterion lasso --compensate reconstruct --calib X.npz
    python tools/make_large_llama.py /tmp/llama.onnx && python tools/bench_prune.py /tmp/llama.onnx --runs 1

Each measurement runs in its own process (peak RSS from getrusage); the best time and the lowest
peak of --runs are kept.
Make the ~100 MB ResNet-50 with tools/export_resnet50_full.py (needs torch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

FLOOR = """
import onnx, resource, sys, time
t = time.perf_counter()
model = onnx.load(sys.argv[1])
external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in onnx.load(sys.argv[1], load_external_data=False).graph.initializer)
onnx.save(model, sys.argv[2], save_as_external_data=external, location="o.onnx.data")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
PRUNE = """
import resource, sys, time
t0 = time.perf_counter()
import onnxprune
from onnxprune.loading import save_model
t = time.perf_counter()
model, plan, report = onnxprune.prune(sys.argv[1], ratio=0.3, criterion=sys.argv[3], compensate=sys.argv[4],
                                      calibration=sys.argv[5] or None)
external = any(i.data_location == 1 for i in __import__("onnx").load(sys.argv[1], load_external_data=False).graph.initializer)
save_model(model, sys.argv[2], external_data=external or None)  # as the CLI writes it
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(script: str, model: str, *extra: str) -> tuple[float, int]:
    """(seconds, peak RSS in KB) of one run in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", script, model, os.path.join(tmp, "o.onnx"), *extra],
                             capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def baseline_rss() -> int:
    """Peak RSS of an interpreter that only imports onnxprune (subtracted from both)."""
    code = "import onnxprune, resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--compensate", default="none", help="none: the prune alone (the goal's setting); merge: with neuron merging")
    ap.add_argument("--calib", default="", help="calibration inputs (for lasso / reconstruct)")
    ap.add_argument("--out")
    args = ap.parse_args()
    model = Path(args.model)
    size = model.stat().st_size + sum(p.stat().st_size for p in model.parent.glob(model.name + ".data"))
    floors = [measure(FLOOR, args.model) for _ in range(args.runs)]
    prunes = [measure(PRUNE, args.model, args.criterion, args.compensate, args.calib) for _ in range(args.runs)]
    floor = (min(t for t, _ in floors), min(m for _, m in floors))  # best time and lowest peak, each
    prune = (min(t for t, _ in prunes), min(m for _, m in prunes))
    base = baseline_rss()
    result = {
        "model": Path(args.model).name, "bytes": size, "criterion": args.criterion, "compensate": args.compensate, "ratio": 0.3,
        "calibration": args.calib or None,
        "floor_s": round(floor[0], 3), "prune_s": round(prune[0], 3), "time_ratio": round(prune[0] / floor[0], 2),
        "prune_peak_mb": round(prune[1] / 1024, 1), "import_peak_mb": round(base / 1024, 1),
        "memory_ratio": round((prune[1] - base) * 1024 / size, 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
