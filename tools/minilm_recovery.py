"""Recovery settings on the trained sentence transformer: which loss, learning rate and data close the gap.

    python tools/export_minilm.py            # once: the model, calib256/calib1024/eval500
    python tools/minilm_recovery.py [--target 0.3] [--variants NAME,...] [--out docs/recovery.md]

all-MiniLM-L6-v2 is pruned once (Wanda, least-squares re-fit, 256 calibration sentences, kept counts
multiples of 8, through the Python API), then each variant is `onnxprune recover` through the CLI from that
same pruned model, timed whole by /usr/bin/time (wall, peak memory), and compared with the original on
the 500 held-out sentences: each sentence's 10 nearest neighbours kept, mean cosine, Spearman of all
pairwise similarities.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
DIR = ROOT / "models" / "third_party" / "minilm"
MODEL, EVAL = DIR / "minilm_l6_embed.onnx", DIR / "eval500.npz"
C256, C1024, C8192 = str(DIR / "calib256.npz"), str(DIR / "calib1024.npz"), str(DIR / "calib8192.npz")
VARIANTS = {  # key: (what the row says, calibration, recover flags)
    "mse3": ("mse, lr 1e-3 (the defaults)", C256, []),
    "mse4": ("mse, lr 1e-4", C256, ["--recover-lr", "1e-4"]),
    "norm3": ("normalized, lr 1e-3", C256, ["--recover-loss", "normalized"]),
    "norm4": ("normalized, lr 1e-4", C256, ["--recover-loss", "normalized", "--recover-lr", "1e-4"]),
    "big": ("1024 sentences: normalized, lr 3e-4, 2 epochs; 1 end-to-end epoch (cosine, lr 1e-5)", C1024,
            ["--recover-loss", "normalized", "--recover-lr", "3e-4", "--recover-epochs", "2",
             "--recover-end-to-end", "1", "--recover-end-to-end-lr", "1e-5"]),
    "e2e8k": ("8192 sentences, end to end only (cosine, lr 1e-4, 3 epochs)", C8192,
              ["--recover-epochs", "0", "--recover-end-to-end", "3", "--recover-lr", "1e-4"]),
}


def pruned_model(target: float, out: Path) -> None:
    """The starting point of every row: Wanda + the least-squares re-fit at `target` fewer MACs."""
    import onnxprune
    from onnxprune.calibration import Calibration

    model, _, _ = onnxprune.prune(str(MODEL), target_macs=target, criterion="wanda", compensate="reconstruct",
                                  round_to=8, input_shapes={"input_ids": [1, 64], "attention_mask": [1, 64]},
                                  calibration=Calibration(C256))
    onnx.save(model, out)


def main() -> None:
    from embedding_table import embed, figures
    from recovery_table import timed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args()
    if not MODEL.is_file():
        raise SystemExit("run python tools/export_minilm.py first")
    data = dict(np.load(EVAL))
    ref = embed(MODEL, data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start, out = Path(tmp) / "start.onnx", Path(tmp) / "r.onnx"
        pruned_model(args.target, start)
        f = figures(ref, embed(start, data))
        rows.append(f"| wanda + reconstruct, no recovery | {f['neighbours']:.1%} | {f['cosine']:.4f} | "
                    f"{f['spearman']:.4f} | | |")
        print(rows[-1], flush=True)
        for key in [v for v in args.variants.split(",") if v]:
            name, calib, flags = VARIANTS[key]
            run, wall, rss = timed([sys.executable, "-m", "onnxprune", "recover", str(MODEL), str(start), "-o",
                                    str(out), "-q", "--no-verify", "--calib", calib, *flags])
            if run.returncode:
                rows.append(f"| {name} | failed: {run.stderr.strip()[-100:]} | | | | |")
                continue
            f = figures(ref, embed(out, data))
            rows.append(f"| {name} | {f['neighbours']:.1%} | {f['cosine']:.4f} | {f['spearman']:.4f} | {wall:.0f} s | "
                        f"{rss:.0f} MiB |")
            print(rows[-1], flush=True)
    table = [f"| {args.target:.0%} fewer MACs: recovery | 10 nearest neighbours kept | mean cosine | Spearman | wall | "
             "peak memory |", "|---|---:|---:|---:|---:|---:|", *rows]
    print("\n".join(table))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
