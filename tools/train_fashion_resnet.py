"""Train a small ResNet on Fashion-MNIST and export it to ONNX (a trained model with residual blocks to depth-prune).

    python tools/train_fashion_resnet.py [--out models/fashion] [--seed 0] [--epochs 4] [--blocks 3,3,3] [--threads 1]

Needs torch (`pip install torch==2.13.0`) and the Debian package dataset-fashion-mnist.
Writes resnet_small.onnx: a stem conv of 16 (stride 2: 14x14), three stages of basic blocks (two 3x3 conv + BN +
ReLU; identity shortcut where the shapes match, a 1x1 conv + BN projection at the first block of stages 2 and 3,
stride 2) at 16/32/64 channels (14x14, 7x7, 4x4), global average pool, linear 10; BatchNormalization kept as
nodes, exported as tools/train_fashion.py exports vgg_bnkeep.onnx (TorchScript exporter, opset 17, input `image`
[N, 1, 28, 28] in [0, 1], output `logits` [N, 10]). Its test accuracy (the 10,000 test images) and how it was
made go into a section of README.md next to it (that section replaced, the rest of the file kept).
One torch thread by default: on 2 cores shared with other work, 2 threads ran a step 15-20x slower (measured).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from fashion_data import load_idx
from torch import nn
from train_fashion import accuracy, export, train

SECTION = "## resnet_small.onnx"


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    """A conv (no bias: BN follows) and its BatchNorm."""
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x)))))); the shortcut a 1x1 conv + BN where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(), *conv_bn(cout, cout))
        changes = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if changes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        return torch.relu(self.shortcut(x) + self.branch(x))


def resnet_small(blocks: tuple[int, ...] = (3, 3, 3), widths: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    """Stem conv (stride 2), stages of basic blocks (stride 2 from the second on), global average pool, linear 10."""
    layers: list[nn.Module] = [*conv_bn(1, widths[0], 3, 2), nn.ReLU()]
    cin = widths[0]
    for stage, (n, width) in enumerate(zip(blocks, widths)):
        for i in range(n):
            layers.append(BasicBlock(cin, width, 2 if stage and not i else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def readme_section(args: argparse.Namespace, acc: float, minutes: float, size: int, params: int) -> list[str]:
    """The README lines of this model."""
    command = (f"python tools/train_fashion_resnet.py --seed {args.seed} --epochs {args.epochs} --blocks {args.blocks} "
               f"--threads {args.threads}")
    how = (f"cosine schedule, batch 128; {args.epochs} epochs, {minutes:.1f} minutes of training on {args.threads} "
           "CPU thread(s)). Same input and output as above.")
    arch = (f"conv16 stride 2, basic blocks {'-'.join(args.blocks.split(','))} at 16/32/64 channels (identity "
            "shortcuts, a 1x1 projection at the two stage changes), global average pool, fc10, BN nodes kept; "
            f"{params:,} parameters, {size / 1e6:.2f} MB")
    return [SECTION, "", f"Made by `{command}` (torch {torch.__version__}; Adam, lr 1e-3,", how, "",
            "| file | architecture | test accuracy |", "|---|---|---:|",
            f"| resnet_small.onnx | {arch} | {acc:.2%} |", ""]


def write_readme(path: Path, section: list[str]) -> None:
    """README.md with this model's section replaced or appended, the rest kept."""
    text = path.read_text() if path.exists() else "# Fashion-MNIST models (trained here)\n"
    kept = text.split(SECTION)[0].rstrip("\n")
    rest = text.split(SECTION, 1)[1].split("\n## ", 1) if SECTION in text else []
    after = "\n## " + rest[1] if len(rest) == 2 else ""
    path.write_text(kept + "\n\n" + "\n".join(section) + after)


def main() -> None:
    """Train, measure, export, document."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/fashion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--blocks", default="3,3,3", help="basic blocks per stage")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_idx("train")
    xte, yte = load_idx("test")
    torch.manual_seed(args.seed)
    model = resnet_small(tuple(int(n) for n in args.blocks.split(",")))
    print("training the small ResNet", flush=True)
    start = time.perf_counter()
    train(model, xtr, ytr, args.epochs, args.seed)
    minutes = (time.perf_counter() - start) / 60
    acc = accuracy(model, xte, yte)
    path = out / "resnet_small.onnx"
    export(model, path, keep_bn=True)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"resnet_small.onnx": acc, "minutes": round(minutes, 2), "bytes": path.stat().st_size}))
    write_readme(out / "README.md", readme_section(args, acc, minutes, path.stat().st_size, params))


if __name__ == "__main__":
    main()
