"""Train a small Hugging Face ViT on Fashion-MNIST and export it to ONNX (a transformer test model for onnxprune).

    python tools/train_vit_fashion.py [--out models/transformers_trained] [--epochs 15] [--seed 0]

Needs torch, transformers, onnx and onnxruntime, and the Debian package dataset-fashion-mnist.
Writes into OUT:
* vit_fashion.onnx               ViTForImageClassification (TorchScript exporter, opset 17), input `image`
                                 [N, 1, 28, 28] in [0, 1], output `logits` [N, 10], weights inlined
* fashion_test500.npz            array "image": the first 500 test images, float32 [500, 1, 28, 28]
* fashion_test500_labels.npy     their int64 labels [500]
* fashion_calib256.npz           array "image": 256 train images drawn with a fixed seed (calibration set)
* README.md                      how it was made, accuracies and file sizes
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_data import load_idx  # noqa: E402

from transformers import ViTConfig, ViTForImageClassification  # noqa: E402


def make_config(patch: int, layers: int) -> ViTConfig:
    return ViTConfig(image_size=28, patch_size=patch, num_channels=1, hidden_size=64, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=128, num_labels=10, attn_implementation="eager")


class LogitsOnly(nn.Module):
    """ViTForImageClassification returning the logits tensor alone (for export)."""

    def __init__(self, vit: ViTForImageClassification) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=image).logits


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, flip: bool) -> torch.Tensor:
    """Per sample: a random translation of up to `shift` pixels (zero padding), a random horizontal flip if `flip`."""
    b = x.shape[0]
    if flip:
        x = torch.where((torch.rand(b, generator=gen) < 0.5)[:, None, None, None], x.flip(3), x)
    if shift:
        padded = nn.functional.pad(x, (shift, shift, shift, shift))
        oy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        windows = padded[:, 0].unfold(1, 28, 1).unfold(2, 28, 1)  # [b, 2*shift+1, 2*shift+1, 28, 28] view
        x = windows[torch.arange(b), oy, ox][:, None]
    return x


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    preds = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((preds.numpy() == y).mean())


def train(model: nn.Module, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
          args: argparse.Namespace) -> list[tuple[int, float, float, float]]:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    steps_per_epoch = len(xtr) // args.batch
    total = args.epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 10)  # one epoch of linear warm-up (10 % of the steps at most), then cosine

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    log = []
    for epoch in range(args.epochs):
        t0 = time.time()
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            xb = augment(xt[idx], gen, args.shift, args.flip) if args.augment else xt[idx]
            loss = nn.functional.cross_entropy(model(xb), yt[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        dt = time.time() - t0
        acc = accuracy(model, xte, yte)
        log.append((epoch + 1, dt, running / steps_per_epoch, acc))
        print(f"epoch {epoch + 1:2d}/{args.epochs}  {dt:5.1f}s  loss {running / steps_per_epoch:.4f}  "
              f"test acc {acc:.2%}", flush=True)
    model.eval()
    return log


def onnx_accuracy(sess, x: np.ndarray, y: np.ndarray) -> float:
    preds = np.concatenate([sess.run(["logits"], {"image": x[i:i + 1000]})[0].argmax(1)
                            for i in range(0, len(x), 1000)])
    return float((preds == y).mean())


def kib(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KiB ({path.stat().st_size} bytes)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/transformers_trained")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patch", type=int, default=7, choices=[4, 7])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--shift", type=int, default=1, help="max random translation in pixels")
    ap.add_argument("--flip", action="store_true", help="also random horizontal flips")
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared 2-core machine 2 threads ran ~12x slower)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    xtr, ytr = load_idx("train")
    xte, yte = load_idx("test")

    torch.manual_seed(args.seed)
    config = make_config(args.patch, args.layers)
    vit = ViTForImageClassification(config)
    model = LogitsOnly(vit)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ViT: patch {args.patch}, {args.layers} layers, hidden 64, 4 heads, MLP 128 -> {n_params} parameters")

    t_start = time.time()
    log = train(model, xtr, ytr, xte, yte, args)
    train_wall = time.time() - t_start
    torch_acc = accuracy(model, xte, yte)
    print(f"training wall time {train_wall:.0f}s, torch test accuracy {torch_acc:.2%}")

    # export (TorchScript exporter)
    onnx_path = out / "vit_fashion.onnx"
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer), "external data"
    assert not list(out.glob("*.onnx.data")), "external data file written"
    assert onnx_path.stat().st_size < 1 << 20, "model over 1 MB"
    ops = sorted({n.op_type for n in m.graph.node})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probe = xte[:256]
    with torch.no_grad():
        ref = model(torch.from_numpy(probe)).numpy()
    got = sess.run(["logits"], {"image": probe})[0]
    max_diff = float(np.abs(ref - got).max())
    got1 = sess.run(["logits"], {"image": probe[:1]})[0]  # batch 1 works too (dynamic axis)
    max_diff = max(max_diff, float(np.abs(ref[:1] - got1).max()))
    print(f"onnxruntime vs torch: max abs diff {max_diff:.2e}")
    assert max_diff < 1e-3, max_diff
    onnx_acc = onnx_accuracy(sess, xte, yte)
    onnx_acc500 = onnx_accuracy(sess, xte[:500], yte[:500])
    print(f"ONNX test accuracy: {onnx_acc:.2%} (10000 images), {onnx_acc500:.2%} (first 500)")

    # data files
    np.savez(out / "fashion_test500.npz", image=np.ascontiguousarray(xte[:500], dtype=np.float32))
    np.save(out / "fashion_test500_labels.npy", yte[:500].astype(np.int64))
    calib_idx = np.sort(np.random.default_rng(args.seed).choice(len(xtr), 256, replace=False))
    np.savez(out / "fashion_calib256.npz", image=np.ascontiguousarray(xtr[calib_idx], dtype=np.float32))

    cmd = (f"python tools/train_vit_fashion.py --seed {args.seed} --patch {args.patch} --layers {args.layers} "
           f"--epochs {args.epochs} --shift {args.shift}" + (" --flip" if args.flip else "")
           + ("" if args.augment else " --no-augment"))
    import onnxruntime
    import transformers
    lines = [
        "# Fashion-MNIST ViT (trained here)", "",
        f"Made by `{cmd}`",
        f"(torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; CPU, {args.threads} torch thread{'s' if args.threads > 1 else ''}).", "",
        "## Model", "",
        "Hugging Face `ViTForImageClassification` built from a `ViTConfig`",
        f"(random init, `torch.manual_seed({args.seed})`):",
        f"image_size 28, patch_size {args.patch} ({(28 // args.patch) ** 2} patches + CLS token), num_channels 1,",
        f"hidden_size 64, {args.layers} layers, 4 heads, intermediate_size 128, GELU, num_labels 10,",
        f"attn_implementation \"eager\"; {n_params} parameters.", "",
        "## Training", "",
        f"Fashion-MNIST train split (60 000 images, no normalisation: pixels in [0, 1]); AdamW, lr {args.lr:g},",
        f"weight decay {args.wd:g}, batch {args.batch}, {args.epochs} epochs,",
        "one epoch of linear warm-up then cosine decay to 0,",
        f"label smoothing {args.label_smoothing:g}; augmentation: "
        + (f"random shift of up to {args.shift} px (zero padding)" + (", random horizontal flip." if args.flip else ".")
           if args.augment else "none."),
        f"Training wall time {train_wall:.0f} s ({train_wall / 60:.1f} min, {train_wall / args.epochs:.1f} s per epoch"
        " including the per-epoch test evaluation).", "",
        "| epoch | time (s) | train loss | test accuracy |", "|---:|---:|---:|---:|",
        *[f"| {e} | {dt:.1f} | {loss:.4f} | {acc:.2%} |" for e, dt, loss, acc in log], "",
        "## Export", "",
        "`torch.onnx.export(..., dynamo=False, opset_version=17)` (TorchScript exporter, constant folding on) of a",
        "wrapper returning `.logits`; input `image` [batch, 1, 28, 28] float32 in [0, 1], output `logits` [batch, 10];",
        "dynamic batch axis, weights inlined.",
        f"onnxruntime vs torch max abs difference on 256 test images: {max_diff:.2e}.",
        f"Operators: {', '.join(ops)}.", "",
        "## Accuracy (onnxruntime, CPU)", "",
        "| images | test accuracy |", "|---|---:|",
        f"| full test set (10 000) | {onnx_acc:.2%} |",
        f"| first 500 test images (`fashion_test500.npz`) | {onnx_acc500:.2%} |", "",
        "## Files", "",
        "| file | contents | size |", "|---|---|---:|",
        f"| vit_fashion.onnx | the model | {kib(onnx_path)} |",
        f"| fashion_test500.npz | array `image`: the first 500 test images, float32 [500, 1, 28, 28] | "
        f"{kib(out / 'fashion_test500.npz')} |",
        f"| fashion_test500_labels.npy | their labels, int64 [500] | {kib(out / 'fashion_test500_labels.npy')} |",
        "| fashion_calib256.npz | array `image`: 256 train images "
        f"(`np.random.default_rng({args.seed}).choice(60000, 256, replace=False)`, sorted), "
        f"float32 [256, 1, 28, 28] | {kib(out / 'fashion_calib256.npz')} |", "",
        "Example:", "",
        "    onnxprune analyze models/transformers_trained/vit_fashion.onnx",
        "    onnxprune validate models/transformers_trained/vit_fashion.onnx PRUNED.onnx \\",
        "        --data models/transformers_trained/fashion_test500.npz \\",
        "        --labels models/transformers_trained/fashion_test500_labels.npy", "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out}/: " + ", ".join(f"{p.name} {p.stat().st_size}" for p in sorted(out.iterdir())))


if __name__ == "__main__":
    main()
