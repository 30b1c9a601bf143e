"""Try the existing ONNX -> PyTorch converters on every model under models/ and compare with onnxruntime.

    python tools/try_converters.py > /tmp/converters.md

Needs torch, onnx, onnxruntime, onnx2torch and onnx2pytorch (a throwaway environment: the project does
not depend on the converters). Inputs are random: dynamic dims are batch 2, sequence-like dims 16 and
any other dynamic dim 64 (PP-OCR models at sizes they accept: height 48 for cls / rec, a multiple
of 32 for det); integer inputs are small token ids, or ones for masks. A converter matches when its
largest error over the outputs, relative to the output's scale (its largest magnitude; 1 for
Sigmoid / Softmax probabilities, which random inputs can saturate to values near 0), is at most 1e-4.

Both converters import torchvision, but only for ops these models lack (nms, roi_align, ...). Where
torchvision cannot load (the only wheel at hand being a CUDA build next to a CPU torch), a stub
stands in for it.
"""
from __future__ import annotations

import re
import sys
import traceback
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
SEQUENCE_WORDS = ("seq", "sequence", "length", "len", "token")
# PP-OCR exports need their real sizes (det: multiple of 32; rec: height 48)
OCR_SHAPES = {"ch_ppocr_mobile_v2.0_cls_infer.onnx": (2, 3, 48, 192),
              "ch_PP-OCRv4_det_infer.onnx": (2, 3, 64, 64),
              "ch_PP-OCRv4_rec_infer.onnx": (2, 3, 48, 64)}
NUMPY_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
               onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
               onnx.TensorProto.INT32: np.int32, onnx.TensorProto.BOOL: np.bool_}


def stub_torchvision() -> None:
    """Put a stand-in torchvision into sys.modules when the real one cannot be imported."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001 - a broken install raises RuntimeError / OSError, not ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    def missing(*args, **kwargs) -> None:
        """Any torchvision op: not available."""
        raise NotImplementedError("torchvision is not available")

    root, ops, io = (types.ModuleType(n) for n in ("torchvision", "torchvision.ops", "torchvision.io"))
    ops.nms = ops.roi_align = ops.roi_pool = ops.deform_conv2d = missing
    io.decode_image = missing
    io.ImageReadMode = types.SimpleNamespace(UNCHANGED=0)
    root.ops, root.io = ops, io
    sys.modules.update({"torchvision": root, "torchvision.ops": ops, "torchvision.io": io})


def dim_size(dim: onnx.TensorShapeProto.Dimension, axis: int) -> int:
    """A concrete size for one declared dimension."""
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return dim.dim_value
    if axis == 0:
        return 2
    return 16 if any(w in dim.dim_param.lower() for w in SEQUENCE_WORDS) else 64


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def random_feeds(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    """Seeded random feeds for every graph input."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in graph_inputs(model):
        ttype = value.type.tensor_type
        shape = OCR_SHAPES.get(path.name) or tuple(dim_size(d, i) for i, d in enumerate(ttype.shape.dim))
        dtype = NUMPY_TYPES[ttype.elem_type]
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype)
        else:
            feeds[value.name] = rng.integers(0, 100, shape).astype(dtype)
    return feeds


def probability_outputs(model: onnx.ModelProto) -> list[bool]:
    """For each graph output, whether a Sigmoid or Softmax produces it."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [producers.get(o.name) in ("Sigmoid", "Softmax") for o in model.graph.output]


def relative_error(got: list[np.ndarray], want: list[np.ndarray], probabilities: list[bool]) -> float:
    """Largest |got - want| over the outputs, each relative to its scale."""
    if len(got) != len(want):
        raise ValueError(f"{len(got)} outputs, expected {len(want)}")
    worst = 0.0
    for g, w, probability in zip(got, want, probabilities):
        if tuple(g.shape) != tuple(w.shape):
            raise ValueError(f"output shape {list(g.shape)}, expected {list(w.shape)}")
        w64, g64 = w.astype(np.float64), g.astype(np.float64)
        scale = 1.0 if probability else max(float(np.abs(w64).max(initial=0.0)), 1e-6)
        worst = max(worst, float(np.abs(g64 - w64).max(initial=0.0)) / scale)
    return worst


def as_arrays(result) -> list[np.ndarray]:
    """A converter's forward result as a list of numpy arrays."""
    if isinstance(result, torch.Tensor):
        result = [result]
    elif isinstance(result, dict):
        result = list(result.values())
    return [r.detach().cpu().numpy() for r in result]


def convert_onnx2torch(model: onnx.ModelProto) -> torch.nn.Module:
    """onnx2torch's converter."""
    from onnx2torch import convert
    return convert(model)


def convert_onnx2pytorch(model: onnx.ModelProto) -> torch.nn.Module:
    """onnx2pytorch's converter (experimental mode allows batch sizes above 1)."""
    from onnx2pytorch import ConvertModel
    return ConvertModel(model, experimental=True)


CONVERTERS = {"onnx2torch": convert_onnx2torch, "onnx2pytorch": convert_onnx2pytorch}


def first_line(exc: BaseException) -> str:
    """The first line of an exception message, short enough for a table cell."""
    text = (str(exc).strip().splitlines() or [""])[0]
    missing = re.search(r"operation_type='(\w+)', version=(\d+)", text)
    if missing:  # onnx2torch names the op in a long repr
        text = f"no converter for {missing.group(1)}-{missing.group(2)}"
    text = f"{type(exc).__name__}: {text}".replace("|", "/")
    return text if len(text) <= 110 else text[:107] + "..."


def try_one(convert, path: Path, feeds: dict[str, np.ndarray], want: list[np.ndarray]) -> tuple[str, float | None]:
    """Convert, run and compare; (cell text, error or None)."""
    try:
        model = onnx.load(str(path))
        module = convert(model).eval()
        with torch.no_grad():
            got = as_arrays(module(*[torch.from_numpy(v) for v in feeds.values()]))
        err = relative_error(got, want, probability_outputs(model))
    except Exception as exc:  # noqa: BLE001 - any converter failure is a table entry
        return f"error: {first_line(exc)}", None
    verdict = "ok" if err <= TOLERANCE else "mismatch"
    return f"{verdict} ({err:.1e})", err


def model_files() -> list[Path]:
    """Every .onnx file under models/, sorted."""
    return sorted((ROOT / "models").rglob("*.onnx"))


def main() -> None:
    """Print the Markdown table and the summary counts."""
    stub_torchvision()
    torch.manual_seed(0)
    print("| model | onnx2torch | onnx2pytorch |")
    print("| --- | --- | --- |")
    counts = {name: {"ok": 0, "mismatch": 0, "error": 0} for name in CONVERTERS}
    paths = model_files()
    for path in paths:
        model = onnx.load(str(path))
        feeds = random_feeds(model, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = session.run(None, feeds)
        cells = []
        for name, convert in CONVERTERS.items():
            cell, _ = try_one(convert, path, feeds, want)
            counts[name][cell.split(" ")[0].rstrip(":")] += 1
            cells.append(cell)
        print(f"| {path.relative_to(ROOT / 'models')} | {' | '.join(cells)} |", flush=True)
        print(f"{path.name}: {cells}", file=sys.stderr)
    print()
    for name, c in counts.items():
        print(f"- {name}: {c['ok']} of {len(paths)} match within {TOLERANCE:g}, "
              f"{c['mismatch']} run but differ, {c['error']} fail to convert or run")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        raise
