"""Export a full-width torchvision ResNet-50 (random weights, about 100 MB) for the speed benchmark.

    /path/to/venv-with-torch/bin/python tools/export_resnet50_full.py OUT.onnx [--keep-bn]

Needs torch==2.14.1 and torchvision==0.29.1 (not a dependency of onnxprune); the file is not
committed (see tools/bench_prune.py).
"""
from __future__ import annotations

import sys

import torch
import torchvision


def main(out: str, keep_bn: bool) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    x = torch.randn(1, 3, 224, 224)
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, (x,), out, dynamo=False, opset_version=17, training=mode,
                      input_names=["input"], output_names=["output"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], "--keep-bn" in sys.argv[2:])
