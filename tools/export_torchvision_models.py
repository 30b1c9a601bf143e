#!/usr/bin/env python
"""Export reduced-width, random-weight torchvision models to ONNX test fixtures.

Each architecture keeps the block structure of the real torchvision model
(residual adds, SE blocks, depthwise/grouped convs, dense concats, channel
shuffle, fire concats, LayerNorm, ...) with reduced widths and, for the deep
models, fewer blocks per stage.  Every architecture is exported four times:

* ``<arch>_ts_bnfold.onnx``      TorchScript exporter (opset 17), eval mode:
  its eval peephole folds every Conv->BatchNorm pair into the Conv.
* ``<arch>_ts_bnkeep.onnx``      TorchScript exporter (opset 17) with
  ``training=TrainingMode.PRESERVE`` on an eval-mode model: the eval peephole
  is skipped, so BatchNorm stays as inference-mode BatchNormalization nodes.
* ``<arch>_dynamo_bnfold.onnx``  torch.export-based exporter (its default
  opset, 20) with ``optimize=True``: the onnxscript optimizer's rewrite rules
  fold Conv->BatchNorm, so no torch-side folding is needed.
* ``<arch>_dynamo_bnkeep.onnx``  torch.export-based exporter with
  ``optimize=False`` followed by onnxscript constant folding and dead-node
  removal only (no pattern rewrites), so BatchNorm is kept.

Dynamo files have their per-node ``pkg.torch.onnx.stack_trace`` metadata
removed (it embeds local file paths); the other node metadata is kept.
VGG uses a 224x224 input: the TorchScript exporter can only export its
AdaptiveAvgPool2d((7, 7)) when the 1/32-resolution feature map is a multiple
of 7.  All other models use 1x3x64x64.  Re-running produces byte-identical
files (checked by sha256 for both exporters).

Only BatchNorm that directly follows a Conv can be folded; DenseNet's
pre-activation BatchNorms (after each concat, and ``norm5``) therefore remain
in its ``bnfold`` files.  SqueezeNet and ConvNeXt have no BatchNorm at all, so
their ``bnfold``/``bnkeep`` files differ only in exporter settings.

Skipped variants: none.

Run with a virtualenv holding torch==2.14.1 and torchvision==0.29.1 (plus
onnx, onnxscript, onnxruntime):

    /path/to/venv-with-torch/bin/python tools/export_torchvision_models.py
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import logging
import pathlib
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import onnx
import onnx_ir
import onnxruntime as ort
import onnxscript.optimizer
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, efficientnet, mobilenetv2
from torchvision.models import regnet, resnet, shufflenetv2, squeezenet, vgg
from model_readme import write_model_readme  # noqa: E402

NUM_CLASSES = 10
TS_OPSET = 17
SEED = 0
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "models" / "torchvision"
SUMMARY_OPS = ("Conv", "BatchNormalization", "Gemm", "MatMul", "Concat", "Add", "Mul")
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
VARIANTS = ("ts_bnfold", "ts_bnkeep", "dynamo_bnfold", "dynamo_bnkeep")


# --------------------------------------------------------------------------- models


class SlimResNet(resnet.ResNet):
    """torchvision ResNet with every width (stem, stages, fc) divided by ``div``."""

    def __init__(self, block: type[nn.Module], layers: list[int], div: int) -> None:
        self.div = div
        super().__init__(block, layers, num_classes=NUM_CLASSES)
        self.conv1 = nn.Conv2d(3, 64 // div, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64 // div)
        self.fc = nn.Linear(512 // div * block.expansion, NUM_CLASSES)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        """Build one stage with ``planes / div`` channels (the first stage also shrinks the stem)."""
        if planes == 64:
            self.inplanes = 64 // self.div
        return super()._make_layer(block, planes // self.div, blocks, stride, dilate)


class SlimVGG(vgg.VGG):
    """torchvision VGG with a given feature extractor and a narrow 3-layer classifier."""

    def __init__(self, features: nn.Module, channels: int, hidden: int) -> None:
        nn.Module.__init__(self)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, NUM_CLASSES),
        )


class SlimSqueezeNet(squeezenet.SqueezeNet):
    """torchvision SqueezeNet 1.1 with every width divided by ``div``."""

    def __init__(self, div: int) -> None:
        nn.Module.__init__(self)
        self.num_classes = NUM_CLASSES
        fire = squeezenet.Fire
        pool = partial(nn.MaxPool2d, kernel_size=3, stride=2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64 // div, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            pool(),
            fire(64 // div, 16 // div, 64 // div, 64 // div),
            fire(128 // div, 16 // div, 64 // div, 64 // div),
            pool(),
            fire(128 // div, 32 // div, 128 // div, 128 // div),
            fire(256 // div, 32 // div, 128 // div, 128 // div),
            pool(),
            fire(256 // div, 48 // div, 192 // div, 192 // div),
            fire(384 // div, 48 // div, 192 // div, 192 // div),
            fire(384 // div, 64 // div, 256 // div, 256 // div),
            fire(512 // div, 64 // div, 256 // div, 256 // div),
        )
        final_conv = nn.Conv2d(512 // div, NUM_CLASSES, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not final_conv:
                nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # torchvision uses std=0.01 here; 0.1 keeps the (ReLU'd) random logits away from zero.
        nn.init.normal_(final_conv.weight, mean=0.0, std=0.1)
        nn.init.zeros_(final_conv.bias)


def build_resnet18() -> nn.Module:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) at 1/8 width: 8-16-32-64."""
    return SlimResNet(resnet.BasicBlock, [2, 2, 2, 2], div=8)


def build_resnet50() -> nn.Module:
    """ResNet-50 (Bottleneck) at 1/8 width with [2, 2, 2, 2] blocks (projection + identity per stage)."""
    return SlimResNet(resnet.Bottleneck, [2, 2, 2, 2], div=8)


def build_mobilenet_v2() -> nn.Module:
    """MobileNetV2 at width 0.25 with at most 2 inverted residuals per stage and a 320-ch head."""
    # t (expansion), c (channels), n (blocks), s (stride); n capped at 2 (the real model has up to 4).
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 2, 2], [6, 96, 2, 1], [6, 160, 2, 2],
               [6, 320, 1, 1]]
    model = mobilenetv2.MobileNetV2(num_classes=NUM_CLASSES, width_mult=0.25, inverted_residual_setting=setting)
    head_in, head_out = model.features[-1][0].in_channels, 320
    model.features[-1] = torchvision.ops.Conv2dNormActivation(
        head_in, head_out, kernel_size=1, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6
    )
    model.last_channel = head_out
    model.classifier[1] = nn.Linear(head_out, NUM_CLASSES)
    return model


def build_mobilenet_v3_small() -> nn.Module:
    """MobileNetV3-Small (all 11 blocks, SE + hardswish) at width 0.25."""
    return torchvision.models.mobilenet_v3_small(num_classes=NUM_CLASSES, width_mult=0.25)


def build_vgg11_bn() -> nn.Module:
    """VGG-11-BN at 1/16 conv width (4..32 channels) with a 32-unit classifier."""
    cfg: list[int | str] = [4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]
    return SlimVGG(vgg.make_layers(cfg, batch_norm=True), channels=32, hidden=32)


def build_densenet121() -> nn.Module:
    """DenseNet-121 layout with growth 8, 16 stem channels and (3, 4, 6, 4) dense layers."""
    return densenet.DenseNet(
        growth_rate=8, block_config=(3, 4, 6, 4), num_init_features=16, bn_size=4, num_classes=NUM_CLASSES
    )


def build_efficientnet_b0() -> nn.Module:
    """EfficientNet-B0 (MBConv + SE + SiLU) at width 0.2 with at most 2 MBConvs per stage."""
    conf = partial(efficientnet.MBConvConfig, width_mult=0.2, depth_mult=1.0)
    setting = [
        conf(1, 3, 1, 32, 16, 1),
        conf(6, 3, 2, 16, 24, 2),
        conf(6, 5, 2, 24, 40, 2),
        conf(6, 3, 2, 40, 80, 2),
        conf(6, 5, 1, 80, 112, 2),
        conf(6, 5, 2, 112, 192, 2),
        conf(6, 3, 1, 192, 320, 1),
    ]
    return efficientnet.EfficientNet(setting, dropout=0.2, num_classes=NUM_CLASSES)


def build_regnet_x_400mf() -> nn.Module:
    """RegNetX-400MF at 1/4 width (group width 4 instead of 16) with depths [1, 2, 2, 2]."""
    params = regnet.BlockParams(
        depths=[1, 2, 2, 2],
        widths=[8, 16, 40, 100],
        group_widths=[4, 4, 4, 4],
        bottleneck_multipliers=[1.0] * 4,
        strides=[2] * 4,
    )
    return regnet.RegNet(params, num_classes=NUM_CLASSES, stem_width=8)


def build_shufflenet_v2_x0_5() -> nn.Module:
    """ShuffleNetV2 x0.5 at half width with [2, 2, 2] units (stride-2 + stride-1 per stage)."""
    return shufflenetv2.ShuffleNetV2([2, 2, 2], [12, 24, 48, 96, 512], num_classes=NUM_CLASSES)


def build_squeezenet1_1() -> nn.Module:
    """SqueezeNet 1.1 (all 8 fire modules) at 1/4 width."""
    return SlimSqueezeNet(div=4)


def build_convnext_tiny() -> nn.Module:
    """ConvNeXt-Tiny at 1/8 width (12-24-48-96) with depths [1, 1, 2, 1]."""
    setting = [
        convnext.CNBlockConfig(12, 24, 1),
        convnext.CNBlockConfig(24, 48, 1),
        convnext.CNBlockConfig(48, 96, 2),
        convnext.CNBlockConfig(96, None, 1),
    ]
    return convnext.ConvNeXt(setting, stochastic_depth_prob=0.1, num_classes=NUM_CLASSES)


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and which input it needs."""

    builder: Callable[[], nn.Module]
    input_size: int = 64


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(build_resnet18),
    "resnet50": ArchSpec(build_resnet50),
    "mobilenet_v2": ArchSpec(build_mobilenet_v2),
    "mobilenet_v3_small": ArchSpec(build_mobilenet_v3_small),
    # AdaptiveAvgPool2d((7, 7)) only exports when the feature map is a multiple of 7.
    "vgg11_bn": ArchSpec(build_vgg11_bn, input_size=224),
    "densenet121": ArchSpec(build_densenet121),
    "efficientnet_b0": ArchSpec(build_efficientnet_b0),
    "regnet_x_400mf": ArchSpec(build_regnet_x_400mf),
    "shufflenet_v2_x0_5": ArchSpec(build_shufflenet_v2_x0_5),
    "squeezenet1_1": ArchSpec(build_squeezenet1_1),
    "convnext_tiny": ArchSpec(build_convnext_tiny),
}


@torch.no_grad()
def randomize_norms(model: nn.Module) -> None:
    """Give BatchNorm/LayerNorm (and ConvNeXt layer scales) random non-identity statistics and affines."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_().mul_(0.1)
        if isinstance(module, convnext.CNBlock):
            module.layer_scale.uniform_(0.5, 1.5)


def make_model(arch: str) -> nn.Module:
    """Build ``arch`` deterministically with random weights, in eval mode."""
    torch.manual_seed(SEED)
    model = ARCHS[arch].builder()
    randomize_norms(model)
    return model.eval()


def make_input(arch: str) -> torch.Tensor:
    """Deterministic random 1x3xHxW input for ``arch``."""
    size = ARCHS[arch].input_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(SEED + 1))


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- export


def export_torchscript(model: nn.Module, x: torch.Tensor, path: pathlib.Path, keep_bn: bool) -> None:
    """Export with the TorchScript exporter; PRESERVE mode skips the Conv+BN folding peephole."""
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=TS_OPSET,
            training=mode,
            do_constant_folding=True,
            input_names=["input"],
            output_names=["output"],
        )


def strip_stack_traces(model: onnx_ir.Model) -> None:
    """Drop per-node Python stack traces: they embed local file paths and bloat the file."""
    for node in model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE_KEY, None)


def export_dynamo(model: nn.Module, x: torch.Tensor, path: pathlib.Path, keep_bn: bool) -> None:
    """Export with the torch.export-based exporter; BN is folded by its optimizer unless kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            optimize=not keep_bn,
            external_data=False,
            verbose=False,
            input_names=["input"],
            output_names=["output"],
        )
    if keep_bn:
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    strip_stack_traces(program.model)
    program.save(str(path), external_data=False)


def export_variant(model: nn.Module, x: torch.Tensor, path: pathlib.Path, variant: str) -> None:
    """Export one of VARIANTS to ``path``."""
    exporter, bn_mode = variant.split("_")
    export = export_torchscript if exporter == "ts" else export_dynamo
    export(model, x, path, keep_bn=bn_mode == "bnkeep")


# --------------------------------------------------------------------------- checks


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """Facts about one exported and checked file."""

    name: str
    arch: str
    variant: str
    params: int
    torch_bn: int
    size: int
    opset: int
    ops: collections.Counter
    rel_diff: float
    sha256: str


def count_torch_bn(model: nn.Module) -> int:
    """Number of BatchNorm modules in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Map each tensor name to the node producing it."""
    return {out: node for node in graph.node for out in node.output}


def check_batchnorm(proto: onnx.ModelProto, variant: str, torch_bn: int) -> None:
    """Assert BN is kept (inference mode, 1 output) or folded (none left after a Conv)."""
    bns = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if variant.endswith("bnkeep"):
        assert len(bns) == torch_bn, f"expected {torch_bn} BatchNormalization nodes, got {len(bns)}"
        for node in bns:
            training = [a.i for a in node.attribute if a.name == "training_mode"]
            assert len(node.output) == 1 and training in ([], [0]), f"training-mode BN {node.name}"
        return
    made_by = producers(proto.graph)
    after_conv = [n for n in bns if n.input[0] in made_by and made_by[n.input[0]].op_type == "Conv"]
    assert not after_conv, f"{len(after_conv)} Conv->BatchNormalization pairs not folded"


def check_io(proto: onnx.ModelProto) -> None:
    """Assert the graph has one ``input``, one ``output`` and no external weights."""
    assert [i.name for i in proto.graph.input] == ["input"], "unexpected graph inputs"
    assert [o.name for o in proto.graph.output] == ["output"], "unexpected graph outputs"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def run_onnx(path: pathlib.Path, x: torch.Tensor) -> np.ndarray:
    """Run ``path`` on CPU with onnxruntime."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x.numpy()})[0]


def relative_diff(path: pathlib.Path, x: torch.Tensor, ref: np.ndarray) -> float:
    """Max abs difference between onnxruntime and torch, relative to the output scale."""
    out = run_onnx(path, x)
    assert out.shape == ref.shape, f"output shape {out.shape} != {ref.shape}"
    return float(np.abs(out - ref).max()) / max(float(np.abs(ref).max()), 1e-6)


def default_opset(proto: onnx.ModelProto) -> int:
    """Opset version of the default ONNX domain."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_file(path: pathlib.Path, arch: str, variant: str, model: nn.Module, x: torch.Tensor,
               ref: np.ndarray) -> FileInfo:
    """Validate one exported file (checker, I/O, BN, numerics) and describe it."""
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    check_io(proto)
    torch_bn = count_torch_bn(model)
    check_batchnorm(proto, variant, torch_bn)
    rel_diff = relative_diff(path, x, ref)
    assert rel_diff < 1e-3, f"{path.name}: onnxruntime/torch mismatch, rel diff {rel_diff:.2e}"
    return FileInfo(
        name=path.name,
        arch=arch,
        variant=variant,
        params=count_params(model),
        torch_bn=torch_bn,
        size=path.stat().st_size,
        opset=default_opset(proto),
        ops=collections.Counter(n.op_type for n in proto.graph.node),
        rel_diff=rel_diff,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def summary_line(info: FileInfo) -> str:
    """One-line human summary of a checked file."""
    ops = " ".join(f"{op}={info.ops.get(op, 0)}" for op in SUMMARY_OPS)
    nodes = sum(info.ops.values())
    return (f"{info.name:38s} {info.size / 1024:7.1f} KB  nodes={nodes:3d}  {ops}  "
            f"rel_diff={info.rel_diff:.1e}  sha256={info.sha256[:12]}")


# --------------------------------------------------------------------------- readme


def bn_text(info: FileInfo) -> str:
    """README wording for how BatchNorm appears in a file."""
    if info.torch_bn == 0:
        return "n/a (no BN)"
    if info.variant.endswith("bnkeep"):
        return "kept"
    left = info.ops.get("BatchNormalization", 0)
    return f"folded ({left} BN not after a Conv remain)" if left else "folded"


def readme_row(info: FileInfo) -> str:
    """One markdown table row of the README."""
    ts = info.variant.startswith("ts")
    exporter = f"TorchScript (opset {info.opset})" if ts else f"dynamo (opset {info.opset})"
    side = ARCHS[info.arch].input_size
    return (f"| `{info.name}` | {info.arch} | {exporter} | {bn_text(info)} | 1x3x{side}x{side} "
            f"| {info.params:,} | {info.size / 1024:.1f} KB |")


def write_readme(infos: list[FileInfo]) -> None:
    """Write models/torchvision/README.md."""
    rows = [readme_row(info) for info in infos]
    text = f"""# Reduced torchvision test models

These ONNX files are reduced-width, random-weight exports of torchvision
classification models (num_classes=10, seeded random weights, random BatchNorm
statistics), made by `tools/export_torchvision_models.py` for the onnxprune
tests. Each keeps the block structure of the real architecture with far fewer
channels (and fewer blocks per stage for the deep models), and is exported with
the TorchScript exporter (`ts`) and the dynamo/torch.export exporter (`dynamo`),
once with BatchNorm folded into the preceding Conv (`bnfold`) and once with
inference-mode BatchNormalization nodes kept (`bnkeep`). The parameter count is
that of the torch model. Regenerate them (deterministically) in a virtualenv
with torch==2.14.1 and torchvision==0.29.1 (plus onnx, onnxscript, onnxruntime):

```
/path/to/venv-with-torch/bin/python tools/export_torchvision_models.py
```

"""
    columns = ["file", "architecture", "exporter", "BN", "input", "parameters", "size"]
    write_model_readme(OUT_DIR, text, columns, rows, [info.size for info in infos])


# --------------------------------------------------------------------------- main


def export_arch(arch: str) -> list[FileInfo]:
    """Export and check all variants of ``arch``, printing one summary line per file."""
    model, x = make_model(arch), make_input(arch)
    with torch.no_grad():
        ref = model(x).numpy()
    infos = []
    for variant in VARIANTS:
        path = OUT_DIR / f"{arch}_{variant}.onnx"
        export_variant(model, x, path, variant)
        infos.append(check_file(path, arch, variant, model, x, ref))
        print(summary_line(infos[-1]), flush=True)
    return infos


def quiet_logs() -> None:
    """Silence the exporters' warnings and progress logging."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main() -> None:
    """Export every architecture in ARCHS (or those given) and write the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), help="only these (README not rewritten)")
    args = parser.parse_args()
    quiet_logs()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    infos = [info for arch in args.arch or ARCHS for info in export_arch(arch)]
    total = sum(info.size for info in infos)
    print(f"total {total / 1024 / 1024:.2f} MB in {len(infos)} files")
    if not args.arch:
        write_readme(infos)


if __name__ == "__main__":
    main()
