"""Train the Fashion-MNIST models of the neuron-merging experiments and export them to ONNX.

    python tools/train_fashion.py [--out models/fashion] [--seed 0]

Needs torch (`pip install torch==2.13.0`) and the Debian package dataset-fashion-mnist.
Writes:
* lenet300.onnx        LeNet-300-100 (784-300-100-10, ReLU), the setting of the paper's Table 1
* vgg_bnkeep.onnx      a small VGG-style conv net, BatchNormalization kept as nodes
* vgg_bnfold.onnx      the same weights, BatchNormalization folded into the convs (PyTorch's default)
and their test accuracy in README.md next to them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from fashion_data import load_idx
from torch import nn

def lenet300() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def vgg_small() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(x) // 128))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 127, 128):
            idx = order[start:start + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
        print(f"  epoch {epoch + 1}/{epochs}", flush=True)
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    preds = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((preds.numpy() == y).mean())


def export(model: nn.Module, path: Path, keep_bn: bool) -> None:
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, opset_version=17, training=mode,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/fashion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs-mlp", type=int, default=15)
    ap.add_argument("--epochs-vgg", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_idx("train")
    xte, yte = load_idx("test")
    results = {}
    torch.manual_seed(args.seed)
    mlp = lenet300()
    print("training LeNet-300-100")
    train(mlp, xtr, ytr, args.epochs_mlp, args.seed)
    results["lenet300.onnx"] = accuracy(mlp, xte, yte)
    export(mlp, out / "lenet300.onnx", keep_bn=False)
    torch.manual_seed(args.seed)
    vgg = vgg_small()
    print("training the VGG-style net")
    train(vgg, xtr, ytr, args.epochs_vgg, args.seed)
    results["vgg_bnkeep.onnx"] = results["vgg_bnfold.onnx"] = accuracy(vgg, xte, yte)
    export(vgg, out / "vgg_bnkeep.onnx", keep_bn=True)
    export(vgg, out / "vgg_bnfold.onnx", keep_bn=False)
    print(json.dumps(results, indent=1))
    lines = ["# Fashion-MNIST models (trained here)", "",
             f"Made by `python tools/train_fashion.py --seed {args.seed}` (torch {torch.__version__}; Adam, lr 1e-3,",
             f"cosine schedule, batch 128; {args.epochs_mlp} epochs for the MLP, {args.epochs_vgg} for the conv net).",
             "Input `image` [N, 1, 28, 28] in [0, 1]; output `logits` [N, 10].", "",
             "| file | architecture | test accuracy |", "|---|---|---:|",
             f"| lenet300.onnx | LeNet-300-100: 784-300-100-10, ReLU | {results['lenet300.onnx']:.2%} |",
             f"| vgg_bnkeep.onnx | conv32-conv32-pool-conv64-conv64-pool-fc128-fc10, BN nodes kept | "
             f"{results['vgg_bnkeep.onnx']:.2%} |",
             f"| vgg_bnfold.onnx | the same weights, BN folded into the convs | {results['vgg_bnfold.onnx']:.2%} |", ""]
    (out / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
