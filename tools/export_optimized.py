#!/usr/bin/env python
"""Fuse transformer exports of models/transformers with onnxruntime's optimizer (com.microsoft ops).

Each source export is passed through ``onnxruntime.transformers.optimizer.optimize_model`` (offline,
CPU, default optimisation level) with the model's head count and hidden size; the fused copy is checked
with ``onnx.checker``, run in onnxruntime against the unfused source at two input shapes (max abs
difference printed and written to the README), and saved in models/transformers_fused/ with a README.

Run in the project's environment (onnxruntime is all it needs):

    python tools/export_optimized.py [--out models/transformers_fused]
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from model_readme import write_model_readme

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "transformers"
OUT_DIR = ROOT / "models" / "transformers_fused"
HEADS, HIDDEN, VOCAB = 4, 64, 500
SHAPES = ((2, 16), (1, 7))  # batch x sequence: the exported shape, then another


@dataclasses.dataclass(frozen=True)
class Spec:
    """One fused copy: its source export, the optimizer's model type, and whether MultiHeadAttention is asked."""

    name: str
    source: str
    model_type: str
    multi_head: bool = False


SPECS = (
    Spec("bert_ts_fused.onnx", "bert_ts.onnx", "bert"),
    Spec("bert_ts_mha.onnx", "bert_ts.onnx", "bert", multi_head=True),
    Spec("gpt2_ts_fused.onnx", "gpt2_ts.onnx", "gpt2"),
)


def fuse(spec: Spec) -> onnx.ModelProto:
    """The source export through onnxruntime's transformer optimizer."""
    options = FusionOptions(spec.model_type)
    options.use_multi_head_attention = spec.multi_head
    optimized = optimize_model(str(SOURCE / spec.source), model_type=spec.model_type, num_heads=HEADS,
                               hidden_size=HIDDEN, optimization_options=options)
    return optimized.model


def feeds(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids and an attention mask whose last sample is padded at its end."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq - seq // 4:] = 0
    return {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64), "attention_mask": mask}


def max_diff(source: pathlib.Path, fused: onnx.ModelProto) -> float:
    """Largest abs difference between the source's and the fused model's outputs over SHAPES."""
    a = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, (batch, seq) in enumerate(SHAPES):
        x = feeds(batch, seq, seed)
        for want, got in zip(a.run(None, x), b.run(None, x)):
            assert want.shape == got.shape, f"{source.name}: output shape {got.shape} != {want.shape}"
            worst = max(worst, float(np.abs(want - got).max()))
    return worst


def fused_ops(model: onnx.ModelProto) -> str:
    """The com.microsoft ops of a model with their counts."""
    counts = collections.Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")
    return ", ".join(f"{op} x{k}" for op, k in sorted(counts.items()))


INTRO = """# Fused transformer test models

Copies of exports in `models/transformers` (tiny random-weight Hugging Face models: hidden size 64,
2 layers, 4 heads of 16, intermediate size 128, vocabulary 500) after onnxruntime's offline transformer
optimizer, which fuses them into its `com.microsoft` ops, made by `tools/export_optimized.py`:

```
python tools/export_optimized.py
```

Each file is `onnxruntime.transformers.optimizer.optimize_model(source, model_type=..., num_heads=4,
hidden_size=64)` with the default optimisation level (`use_multi_head_attention=True` in the fusion
options for `bert_ts_mha.onnx`), saved with onnxruntime {ort} and onnx {onnx}. Each passes
`onnx.checker` and was run in onnxruntime against its unfused source on random token ids with a
padded last sample at batch x sequence 2x16 and 1x7: the largest output difference is in the table.
The optimizer left GPT-2's attention as plain ops (it fused GPT-2's norms and GELU only).
"""
COLUMNS = ["file", "source", "model type", "fused ops", "max abs diff vs source", "size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    args = parser.parse_args()
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, sizes = [], []
    for spec in SPECS:
        model = fuse(spec)
        onnx.checker.check_model(model, full_check=True)
        diff = max_diff(SOURCE / spec.source, model)
        path = args.out / spec.name
        onnx.save(model, str(path))
        sizes.append(path.stat().st_size)
        rows.append(f"| `{spec.name}` | `{spec.source}` | {spec.model_type} | {fused_ops(model)} | {diff:.1e} | "
                    f"{sizes[-1] / 1024:.1f} KB |")
        print(f"{spec.name}: {fused_ops(model)}; max abs diff {diff:.1e}")
    write_model_readme(args.out, INTRO.format(ort=ort.__version__, onnx=onnx.__version__), COLUMNS, rows, sizes)


if __name__ == "__main__":
    main()
