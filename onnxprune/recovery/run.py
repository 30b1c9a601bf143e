"""Recovery from the user's calibration inputs: read them for the model's inputs, find the padding mask, distill."""
from __future__ import annotations

from typing import Any, Callable

import onnx

from ..calibration.data import Calibration, Samples
from ..errors import OnnxPruneError
from ..loading import export, prepare
from ..runtime.feeds import session_inputs
from ..runtime.providers import open_session

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                 "MatMulNBits", "QGemm"}  # and every QLinear* op
SETTINGS = ("epochs", "lr", "end_to_end", "loss", "end_to_end_loss", "end_to_end_lr", "batch", "hold_out", "seed")  # what a plan records and a replay reuses


def teacher_of(original) -> onnx.ModelProto:
    """The original as the pipeline names it (prepared, unpruned): its tensors carry the pruned model's names."""
    prep = prepare(original)
    return export(prep, prep.graph)


def recover_from(original: onnx.ModelProto, pruned: onnx.ModelProto, calibration: Calibration,
                 settings: dict[str, Any] | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> tuple[onnx.ModelProto, dict]:
    """The pruned model with its remaining weights tuned to reproduce the original on the calibration inputs
    (block by block, then end to end if asked: distill.recover), and the record of it.

    `original` is the teacher as teacher_of gives it; `settings` are RecoverOptions fields (SETTINGS, device,
    threads). Padding positions (the calibration's mask input) are left out of every loss. Needs PyTorch.
    """
    quantized = sorted({n.op_type for n in pruned.graph.node}
                       & (QUANTIZED_OPS | {n.op_type for n in pruned.graph.node if n.op_type.startswith("QLinear")}))
    if quantized:
        raise OnnxPruneError(f"recovery tunes float weights, and this model is quantized (found {', '.join(quantized)}): "
                             "recover the float model, then quantize it (docs/guide/formats.md)")
    try:
        from .distill import RecoverOptions, recover
    except ImportError as exc:
        if "torch" in str(exc):
            raise OnnxPruneError("recovery needs PyTorch: pip install 'onnxprune[recover]'") from None
        raise
    specs, dtypes = session_inputs(open_session(original.SerializeToString(), "cpu").session)
    samples = Samples(calibration, specs, dtypes)
    if samples.count < 2:
        raise OnnxPruneError(f"recovery needs at least 2 calibration samples (one is held out); got {samples.count}")
    options = RecoverOptions(**{**(settings or {}), "mask": calibration.mask_input(specs)})
    model, record = recover(original, pruned, samples.read(0, samples.count), options, progress)
    record["calibration"] = {"source": str(calibration.path), "samples": samples.count, "mask": options.mask}
    record["settings"] = {k: getattr(options, k) for k in SETTINGS}
    return model, record


def recovery_lines(record: dict) -> str:
    """What the CLI prints of a recovery: one line per block and the total."""
    blocks = record["blocks"]
    kept = sum(b["kept"] == "recovered" for b in blocks)
    cal = record["calibration"]
    what = f"{len(blocks)} blocks" if blocks else "end to end only"
    lines = [f"recovery: {what} on {record['samples']['train']} samples ({record['samples']['held_out']} "
             f"held out) of {cal['source']}" + (f", padding where '{cal['mask']}' is 0 left out" if cal["mask"] else "")
             + (f"; {kept} recovered, {len(blocks) - kept} kept their weights" if blocks else "")
             + f"; {record['seconds']:.0f} s on "
             f"{record['device']}"]
    for b in blocks:
        lines.append(f"  {b['name']}: held-out {b['loss']} loss {b['held_out_loss_before']:.4g} -> "
                     f"{b['held_out_loss_after']:.4g} "
                     f"({b['kept']})")
    e2e = record.get("end_to_end")
    if e2e:
        lines.append(f"  end to end: held-out {e2e['loss']} loss {e2e['held_out_loss_before']:.4g} -> "
                     f"{e2e['held_out_loss_after']:.4g} "
                     f"({e2e['kept']})")
    return "\n".join(lines)
