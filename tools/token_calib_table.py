"""Token-aware calibration on a trained sentence transformer: padding positions left out, or counted.

    python tools/export_minilm.py                  # once
    python tools/token_calib_table.py [--targets 0.3,0.5] [--out docs/recovery.md]

all-MiniLM-L6-v2 (sentences padded to 64 tokens, 19.6 real ones on average), pruned by `onnxprune prune
--criterion wanda --reconstruct` with its 256 calibration sentences: statistics and re-fit rows on the real
positions only (the default, --calib-mask auto), or on every position as before (--calib-mask none, 10
positions drawn per sentence, --calib-points 64 for all of them). Compared with the original on 500 other
sentences: each sentence's 10 nearest neighbours kept, the mean cosine, the Spearman correlation of all
pairwise similarities.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from embedding_table import CALIB, EVAL, MODEL, SHAPES, embed, figures  # noqa: E402

VARIANTS = {"padding left out (auto)": [], "padding counted, 10 positions": ["--calib-mask", "none"],
            "padding counted, all 64 positions": ["--calib-mask", "none", "--calib-points", "64"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="0.3,0.5")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = dict(np.load(EVAL))
    ref = embed(MODEL, data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.onnx"
        for target in args.targets.split(","):
            for name, flags in VARIANTS.items():
                run = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(MODEL), "-o", str(out), "-q",
                                      "--no-verify", "--target-macs", target, "--criterion", "wanda", "--reconstruct",
                                      "--calib", str(CALIB), *SHAPES, *flags], capture_output=True, text=True)
                if run.returncode:
                    rows.append(f"| {float(target):.0%} | {name} | failed: {run.stderr.strip()[:100]} | | |")
                    continue
                f = figures(ref, embed(out, data))
                rows.append(f"| {float(target):.0%} | {name} | {f['neighbours']:.1%} | {f['cosine']:.4f} | "
                            f"{f['spearman']:.4f} |")
                print(rows[-1], flush=True)
    table = ["| fewer MACs | calibration (wanda + reconstruct) | 10 nearest neighbours kept | mean cosine | "
             "Spearman (pairwise) |", "|---|---|---:|---:|---:|", *rows]
    print("\n".join(table))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
