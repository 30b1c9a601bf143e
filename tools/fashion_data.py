"""Fashion-MNIST from the Debian package dataset-fashion-mnist, and as .npz/.npy files for the CLI.

    python tools/fashion_data.py [--out data/fashion] [--split test] [--samples N]

writes OUT/x.npz (array "image", the input name of the models in models/fashion/) and OUT/labels.npy,
ready for `onnxprune validate|sensitivity|prune --data OUT/x.npz --labels OUT/labels.npy`.
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

DATA = Path("/usr/share/datasets/fashion-mnist")


def load_idx(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 in [0, 1], shape [N, 1, 28, 28], and int64 labels."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(DATA / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(DATA / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/fashion")
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--samples", type=int, help="the first N samples only")
    args = ap.parse_args()
    x, y = load_idx(args.split)
    x, y = x[:args.samples], y[:args.samples]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "x.npz", image=x)
    np.save(out / "labels.npy", y)
    print(f"wrote {out / 'x.npz'} ({len(x)} images) and {out / 'labels.npy'}")


if __name__ == "__main__":
    main()
