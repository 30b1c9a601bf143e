"""Export reduced-width, random-weight Ultralytics YOLO detectors to ONNX for the onnxprune tests.

    python3 -m venv /work/venv-yolo
    /work/venv-yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics onnx onnxslim onnxruntime onnxscript
    /work/venv-yolo/bin/python tools/export_yolo.py

YOLOv8n and YOLO11n are built from Ultralytics' own model yamls with the width multiple lowered to
WIDTH (every block kept: C2f / C3k2, SPPF, C2PSA attention in YOLO11, the anchor-free Detect head
with DFL), NUM_CLASSES classes, seeded random weights and random BatchNorm statistics. No weights,
fonts or anything else is downloaded (YOLO_OFFLINE, a private YOLO_CONFIG_DIR, no AMP/plots/val).

Each model is written twice into models/yolo/:

- ``*_ul.onnx``: what a user gets from ``model.export(format="onnx")``: Ultralytics' exporter
  (TorchScript ``torch.onnx.export``, its default opset, BatchNorm fused into the convs, C2f's
  ``forward_split``), simplified by onnxslim. The export date is dropped from the metadata so
  reruns give the same bytes.
- ``*_dynamo.onnx``: the very module Ultralytics hands to ``torch.onnx.export`` (captured), exported
  with the torch.export-based exporter (dynamo=True, its default opset and optimizer), with
  per-node stack traces stripped.

Every file is checked (full onnx.checker, onnxruntime on CPU against the torch module) and
models/yolo/README.md is rewritten.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "models" / "yolo"
CONFIG_DIR = pathlib.Path(tempfile.gettempdir()) / "onnxprune-yolo-config"

# Before ultralytics is imported: never go online, never pip-install, no settings in the home dir.
os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="0", YOLO_CONFIG_DIR=str(CONFIG_DIR))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import ultralytics  # noqa: E402
import ultralytics.utils.export.engine as ul_engine  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.modules.block import Attention, PSABlock  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, yaml_model_load  # noqa: E402
from model_readme import write_model_readme  # noqa: E402

SEED = 0
WIDTH = 0.0625
NUM_CLASSES = 10
IMGSZ = 160
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
VOLATILE_METADATA = ("date",)
SUMMARY_OPS = ("Conv", "Concat", "Split", "Slice", "Add", "Mul", "Sigmoid", "MaxPool", "Resize", "Reshape",
               "Transpose", "MatMul", "Softmax")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One Ultralytics architecture: its packaged yaml and the blocks it is meant to show."""

    yaml: str
    blocks: str
    attn_heads: int = 0  # heads of every PSA attention (0: what the width gives)


ARCHS: dict[str, ArchSpec] = {
    "yolov8n": ArchSpec("yolov8n.yaml", "Conv, C2f, SPPF, FPN/PAN Concat + Upsample, Detect (DFL)"),
    # yolo11n's C2PSA has 128 channels and 2 heads; at reduced width it would get max(32 // 64, 1) = 1 head.
    "yolo11n": ArchSpec("yolo11n.yaml", "Conv, C3k2, SPPF, C2PSA (2-head attention), FPN/PAN, Detect (DFL, DWConv cls)",
                        attn_heads=2),
}

VARIANTS = ("ul", "dynamo")


def stem(arch: str) -> str:
    """File stem that says how the model was reduced."""
    return f"{arch}_w{WIDTH:g}_nc{NUM_CLASSES}_{IMGSZ}"


# --------------------------------------------------------------------------- model


@torch.no_grad()
def randomize_norms(model: nn.Module) -> None:
    """Random non-identity BatchNorm statistics and affines (folded into the convs on export)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_().mul_(0.1)


def set_attention_heads(model: nn.Module, heads: int) -> None:
    """Give every PSA attention ``heads`` heads, keeping its weights.

    Attention(dim, heads, attn_ratio=0.5) has the same parameter shapes for any head count dividing dim
    (qkv: dim -> dim + 2 * dim/2 channels), so the weights carry over; only the Reshape/Split that
    cut qkv into heads change, as in the full-width model.
    """
    for block in model.modules():
        if isinstance(block, PSABlock) and block.attn.num_heads != heads:
            dim = block.attn.qkv.conv.in_channels
            attn = Attention(dim, num_heads=heads, attn_ratio=0.5)
            attn.load_state_dict(block.attn.state_dict())
            block.attn = attn


def make_yolo(arch: str) -> YOLO:
    """A YOLO wrapper around ``arch`` at WIDTH with NUM_CLASSES, seeded random weights, random BN."""
    spec = ARCHS[arch]
    with contextlib.redirect_stdout(io.StringIO()):
        yolo = YOLO(spec.yaml)  # full-size model from the packaged yaml; replaced below
    cfg = yaml_model_load(spec.yaml)
    depth, _, max_channels = cfg["scales"][cfg["scale"]]
    cfg["scales"] = {cfg["scale"]: [depth, WIDTH, max_channels]}
    cfg["nc"] = NUM_CLASSES
    torch.manual_seed(SEED)
    model = DetectionModel(cfg, ch=3, nc=NUM_CLASSES, verbose=False)
    if spec.attn_heads:
        set_attention_heads(model, spec.attn_heads)
    randomize_norms(model)
    model.args = yolo.model.args
    model.task = yolo.model.task
    yolo.model = model.eval()
    return yolo


def count_params(model: nn.Module) -> int:
    """Parameters of the (unfused) torch model."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- export


def export_ultralytics(yolo: YOLO, path: pathlib.Path) -> tuple[nn.Module, torch.Tensor]:
    """``yolo.export(format="onnx")`` into ``path``; returns the module and input it traced."""
    captured: dict[str, object] = {}
    original = ul_engine.torch2onnx

    def capture(model, im, *args, **kwargs):
        captured["model"], captured["im"] = model, im
        return original(model, im, *args, **kwargs)

    ul_engine.torch2onnx = capture
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                out = yolo.export(format="onnx", imgsz=IMGSZ, batch=1, device="cpu", simplify=True,
                                  dynamic=False, half=False, nms=False)
            proto = onnx.load(out)
    finally:
        ul_engine.torch2onnx = original
    for prop in [p for p in proto.metadata_props if p.key in VOLATILE_METADATA]:
        proto.metadata_props.remove(prop)
    onnx.save(proto, str(path))
    return captured["model"], captured["im"]


def export_dynamo(model: nn.Module, im: torch.Tensor, path: pathlib.Path) -> None:
    """torch.export-based exporter (its default opset and optimizer), stack traces stripped."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (im,), dynamo=True, external_data=False, verbose=False,
                                    input_names=["images"], output_names=["output0"])
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE_KEY, None)
    program.save(str(path), external_data=False)


# --------------------------------------------------------------------------- checks


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """Facts about one exported and checked file."""

    name: str
    arch: str
    variant: str
    params: int
    size: int
    opset: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    ops: collections.Counter
    rel_diff: float
    sha256: str


def default_opset(proto: onnx.ModelProto) -> int:
    """Opset version of the default ONNX domain."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_file(path: pathlib.Path, arch: str, variant: str, params: int, x: np.ndarray, ref: np.ndarray) -> FileInfo:
    """Full checker, one images -> output0 graph with embedded weights, onnxruntime == torch."""
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["images"], "unexpected graph inputs"
    assert [o.name for o in proto.graph.output] == ["output0"], "unexpected graph outputs"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = session.run(["output0"], {"images": x})[0]
    assert out.shape == ref.shape, f"{path.name}: output shape {out.shape} != {ref.shape}"
    rel_diff = float(np.abs(out - ref).max()) / max(float(np.abs(ref).max()), 1e-6)
    assert rel_diff < 1e-3, f"{path.name}: onnxruntime/torch mismatch, rel diff {rel_diff:.2e}"
    return FileInfo(
        name=path.name, arch=arch, variant=variant, params=params, size=path.stat().st_size,
        opset=default_opset(proto), input_shape=x.shape, output_shape=out.shape,
        ops=collections.Counter(n.op_type for n in proto.graph.node), rel_diff=rel_diff,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def summary_line(info: FileInfo) -> str:
    """One-line human summary of a checked file."""
    ops = " ".join(f"{op}={info.ops[op]}" for op in SUMMARY_OPS if info.ops.get(op))
    return (f"{info.name:40s} {info.size / 1024:7.1f} KB  opset={info.opset} nodes={sum(info.ops.values()):3d}  "
            f"{ops}  rel_diff={info.rel_diff:.1e}  sha256={info.sha256[:12]}")


# --------------------------------------------------------------------------- readme


def readme_row(info: FileInfo) -> str:
    """One markdown table row of the README."""
    exporter = {"ul": "Ultralytics export: TorchScript + onnxslim", "dynamo": "dynamo (torch.export)"}[info.variant]
    shape = "x".join(map(str, info.input_shape))
    out = "x".join(map(str, info.output_shape))
    return (f"| `{info.name}` | {info.arch} | {exporter} (opset {info.opset}) | {shape} | {out} "
            f"| {info.params:,} | {info.size / 1024:.1f} KB |")


def write_readme(infos: list[FileInfo]) -> None:
    """Write models/yolo/README.md."""
    rows = [readme_row(info) for info in infos]
    blocks = "\n".join(f"- {arch}: {spec.blocks}" for arch, spec in ARCHS.items())
    text = f"""# Reduced Ultralytics YOLO test models

These ONNX files are reduced-width, random-weight exports of Ultralytics YOLO detectors, made by
`tools/export_yolo.py` for the onnxprune tests. Each model is built from Ultralytics' packaged yaml
(`yolov8n.yaml`, `yolo11n.yaml`: depth multiple and block layout of the `n` scale) with the width
multiple lowered from 0.25 to {WIDTH:g} (backbone channels 8..64 instead of 16..256; the Detect head
keeps its fixed 64-channel box branch with 16 DFL bins per side), {NUM_CLASSES} classes instead of 80,
seeded random weights and random BatchNorm statistics (fused into the convs by the export), at a
{IMGSZ}x{IMGSZ} input. YOLO11's C2PSA attention is given 2 heads, as in the full-width yolo11n (the
reduced width alone would give it 1; the parameter shapes are the same, only the Reshape/Split
into heads differ). No weights are downloaded. Blocks kept:

{blocks}

Two exports per model:

- `_ul`: exactly what `model.export(format="onnx", imgsz={IMGSZ})` gives a user (ultralytics
  {ultralytics.__version__}): the TorchScript exporter at Ultralytics' default opset, BatchNorm fused
  into the convs, C2f/C3k2 as `Split`, simplified by onnxslim, with Ultralytics' metadata (less
  the export date, dropped so reruns are byte-identical).
- `_dynamo`: the same prepared module exported with `torch.onnx.export(..., dynamo=True)` (its
  default opset and optimizer; BN folded by the optimizer), per-node stack traces stripped.

The output is the raw detection tensor `output0` [1, 4 + classes, anchors] (boxes decoded via
DFL, class sigmoid, no NMS). The parameter count is that of the unfused torch model. Regenerate
them (deterministically: reruns give the same bytes) in a virtualenv outside the repo:

```
python3 -m venv /work/venv-yolo
/work/venv-yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics onnx onnxslim onnxruntime onnxscript
/work/venv-yolo/bin/python tools/export_yolo.py
```

"""
    columns = ["file", "architecture", "exporter", "input", "output", "parameters", "size"]
    write_model_readme(OUT_DIR, text, columns, rows, [info.size for info in infos])


# --------------------------------------------------------------------------- main


def export_arch(arch: str) -> list[FileInfo]:
    """Export and check both variants of ``arch``."""
    yolo = make_yolo(arch)
    params = count_params(yolo.model)
    x = np.random.default_rng(SEED + 1).standard_normal((1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    ul_path = OUT_DIR / f"{stem(arch)}_ul.onnx"
    module, im = export_ultralytics(yolo, ul_path)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
    infos = [check_file(ul_path, arch, "ul", params, x, ref)]
    print(summary_line(infos[-1]), flush=True)
    dyn_path = OUT_DIR / f"{stem(arch)}_dynamo.onnx"
    export_dynamo(module, im, dyn_path)
    infos.append(check_file(dyn_path, arch, "dynamo", params, x, ref))
    print(summary_line(infos[-1]), flush=True)
    return infos


def main() -> None:
    """Export every architecture in ARCHS (or those given) and write the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), help="only these (README not rewritten)")
    args = parser.parse_args()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    logging.getLogger("ultralytics").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    infos = [info for arch in args.arch or ARCHS for info in export_arch(arch)]
    print(f"total {sum(i.size for i in infos) / 1024 / 1024:.2f} MB in {len(infos)} files")
    if not args.arch:
        write_readme(infos)
    shutil.rmtree(CONFIG_DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
