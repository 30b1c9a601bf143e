"""The cost of the allocation search itself: wall time and peak memory of the sensitivity measurements
(and of an iterative allocation) in this process, a local process pool and a local Ray, appended to
docs/allocation.md.

    python tools/search_cost.py [--model models/fashion/vgg_bnkeep.onnx] [--out docs/allocation.md]

Each run is a fresh `onnxprune prune --allocate ...` process; memory is the peak, sampled every 50 ms,
of the proportional set size (PSS, shared pages split between the processes sharing them) summed over
the process and all its descendants (pool workers, Ray's raylet, GCS and workers). Linux only (/proc).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FASHION = Path("models/fashion")


def tree(root: int) -> list[int]:
    """The process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak PSS of the process tree in MB, exit code)."""
    start, peak = time.time(), 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        peak = max(peak, sum(pss_mb(p) for p in tree(proc.pid)))
        time.sleep(0.05)
    err = proc.stderr.read()
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return time.time() - start, peak, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(FASHION / "vgg_bnkeep.onnx"))
    ap.add_argument("--out", default="docs/allocation.md")
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("onnxprune"))
    rows = []
    jobs = [("sensitivity, reconstruct", ["--allocate", "sensitivity", "--reconstruct"]),
            ("iterative, merge", ["--allocate", "iterative"])]
    runners = [("this process", []), ("2 processes (--jobs 2)", ["--jobs", "2"]),
               ("local Ray, 2 CPUs (--ray local)", ["--ray", "local"])]
    with tempfile.TemporaryDirectory() as tmp:
        for what, flags in jobs:
            for where, extra in runners:
                cmd = [exe, "prune", args.model, "-o", f"{tmp}/o.onnx", "--target-macs", "0.5", *flags,
                       "--calib", str(FASHION / "calib256.npz"), "-q", *extra]
                wall, peak, rc = run(cmd)
                rows.append(f"| {what} | {where} | {wall:.1f} s | {peak:.0f} MB | {rc} |")
                print(rows[-1], flush=True)
    text = (f"\n## The cost of the search ({time.strftime('%Y-%m-%d')})\n\n"
            f"`python tools/search_cost.py --model {args.model}` ({os.cpu_count()} cores): one "
            "`onnxprune prune --target-macs 0.5 --calib models/fashion/calib256.npz` process per row, wall time "
            "of the whole command and the peak PSS summed over it and every process it started.\n\n"
            "| allocation | measured in | wall | peak memory | exit |\n|---|---|---:|---:|---:|\n"
            + "\n".join(rows) + "\n")
    with open(args.out, "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
