"""Allocation on a real trained sentence-embedding model: what each way of choosing the cut keeps.

    python tools/export_minilm.py            # once: the model and the sentences
    python tools/embedding_table.py [--targets 0.3,0.5] [--out docs/allocation.md] [--onnxprune CMD]

For each MAC target, `onnxprune prune` (the CLI, as a user runs it) with: the global l2 threshold, FLAP
(per-group standardised scores, its mean fold), and `--allocate sensitivity` (l2, curves measured on 64
calibration sentences; the loss is what the model's output is read as). Each result is compared with the
original on 500 other sentences: each sentence's 10 nearest neighbours kept (neighbour agreement), the
mean cosine of the two embeddings, and the Spearman correlation of all pairwise similarities. Wall time of
the prune. `--onnxprune` runs another build (e.g. an older checkout) for a before/after row.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "models" / "third_party" / "minilm"
MODEL, CALIB, EVAL = DIR / "minilm_l6_embed.onnx", DIR / "calib256.npz", DIR / "eval500.npz"
SHAPES = ["--shape", "input_ids:1x64", "--shape", "attention_mask:1x64"]
METHODS = {
    "global l2": ["--criterion", "l2"],
    "flap (standardised per group)": ["--criterion", "flap", "--calib", str(CALIB), "--calib-samples", "64"],
    "sensitivity l2": ["--criterion", "l2", "--allocate", "sensitivity", "--calib", str(CALIB), "--calib-samples",
                       "64"],
}


def embed(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    return np.concatenate([s.run(None, {n: data[n][i:i + 50] for n in names})[0] for i in range(0, len(data[names[0]]), 50)])


def figures(ref: np.ndarray, got: np.ndarray, k: int = 10) -> dict:
    """Neighbour agreement at k, mean cosine, Spearman of the pairwise similarities."""
    from onnxprune.validation.tasks import neighbour_agreement, unit

    a, b = unit(ref), unit(got)
    upper = np.triu_indices(len(a), 1)
    return {"neighbours": neighbour_agreement(a, b, k), "cosine": float((a * b).sum(1).mean()),
            "spearman": float(spearmanr((a @ a.T)[upper], (b @ b.T)[upper]).statistic)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="0.3,0.5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--onnxprune", default=f"{sys.executable} -m onnxprune")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args()
    if not MODEL.is_file():
        raise SystemExit("run python tools/export_minilm.py first")
    data = dict(np.load(EVAL))
    ref = embed(MODEL, data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            for name in args.methods.split(","):
                out, report = Path(tmp) / "p.onnx", Path(tmp) / "r.json"
                cmd = shlex.split(args.onnxprune) + ["prune", str(MODEL), "-o", str(out), "--target-macs", target,
                                                     "--report", str(report), "-q", *SHAPES, *METHODS[name]]
                t0 = time.perf_counter()
                run = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if run.returncode:
                    rows.append(f"| {target} | {name}{args.label} | failed: {run.stderr.strip()[:120]} | | | | |")
                    continue
                rep = json.loads(report.read_text())
                f = figures(ref, embed(out, data))
                kept = rep.get("allocation", {}).get("compared", {}).get("kept", "")
                rows.append(f"| {float(target):.0%} | {name}{args.label} | {f['neighbours']:.1%} | {f['cosine']:.4f} | "
                            f"{f['spearman']:.4f} | {kept} | {wall:.0f} s |")
                print(rows[-1], flush=True)
    table = ["| fewer MACs | method | 10 nearest neighbours kept | mean cosine | Spearman (pairwise) | "
             "allocation kept | wall |", "|---|---|---:|---:|---:|---|---:|", *rows]
    print("\n".join(table))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
