"""Fashion-MNIST from the Debian package dataset-fashion-mnist, and as .npz/.npy files for the CLI.

    python tools/fashion_data.py [--out data/fashion] [--split test] [--samples N]

writes OUT/x.npz (array "image", the input name of the models in models/fashion/) and OUT/labels.npy,
ready for `onnxprune validate|sensitivity|prune --data OUT/x.npz --labels OUT/labels.npy`.

    python tools/fashion_data.py --demo

writes the README main job's files into models/fashion/: test500.npz + test500_labels.npy (the first
500 test images) and calib256.npz (256 training images, seed 0), compressed.
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
    ap.add_argument("--demo", action="store_true", help="write the main job's data into models/fashion/")
    args = ap.parse_args()
    if args.demo:
        demo(Path("models/fashion"))
        return
    x, y = load_idx(args.split)
    x, y = x[:args.samples], y[:args.samples]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "x.npz", image=x)
    np.save(out / "labels.npy", y)
    print(f"wrote {out / 'x.npz'} ({len(x)} images) and {out / 'labels.npy'}")


def demo(out: Path) -> None:
    """The shipped demo data: 500 test images with labels, 256 training images for calibration."""
    x, y = load_idx("test")
    np.savez_compressed(out / "test500.npz", image=x[:500])
    np.save(out / "test500_labels.npy", y[:500])
    xt, _ = load_idx("train")
    pick = np.sort(np.random.default_rng(0).choice(len(xt), 256, replace=False))
    np.savez_compressed(out / "calib256.npz", image=xt[pick])
    print(f"wrote {out}/test500.npz, test500_labels.npy, calib256.npz")


if __name__ == "__main__":
    main()
