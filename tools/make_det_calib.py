"""Synthetic text pages for the data-driven path on PP-OCRv4 det (docs/bench_prune.md), made deterministically.

    python tools/make_det_calib.py [--calib /tmp/det_calib.npz] [--eval /tmp/det_eval.npz] [--size 320]

256 calibration pages (seed 0) and 32 held-out ones (seed 1): white-ish background, 3-7 lines of
DejaVu text and 2-4 dark strokes or boxes, normalised as PP-OCR det does; each an array `x`,
float32 [N, 3, size, size], saved uncompressed (`np.savez`) so that calibration reads it lazily.
"""
from __future__ import annotations

import argparse

import numpy as np

from reconstruction_table import text_images


def pages(n: int, seed: int, size: int) -> np.ndarray:
    """`n` det pages of size x size drawn from `seed`, as float32 [n, 3, size, size]."""
    return text_images("det", n, seed, size=(size, size), marks=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", default="/tmp/det_calib.npz")
    ap.add_argument("--eval", default="/tmp/det_eval.npz")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--size", type=int, default=320)
    args = ap.parse_args()
    for path, n, seed in ((args.calib, args.calib_samples, 0), (args.eval, args.eval_samples, 1)):
        x = pages(n, seed, args.size)
        np.savez(path, x=x)
        print(f"{path}: x {list(x.shape)} {x.dtype}, seed {seed}")


if __name__ == "__main__":
    main()
