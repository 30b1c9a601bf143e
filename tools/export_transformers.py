#!/usr/bin/env python
"""Export tiny, random-weight Hugging Face transformers to ONNX test fixtures.

Every model is built from a tiny config (hidden 64, 2 layers, 4 heads of
head_dim 16, intermediate 128, vocab 500, sequence length 16) with seeded
random weights (every parameter, biases and LayerNorm weights included, gets
seeded noise so no two initializers are equal), and exported with

* the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17)
  using ``attn_implementation="eager"`` -> ``<model>_ts.onnx``;
* the same exporter with ``attn_implementation="sdpa"`` -> ``<model>_sdpa_ts.onnx``;
* the torch.export-based exporter (``dynamo=True``, opset 18, its default
  onnxscript optimizer) with ``attn_implementation="sdpa"`` -> ``<model>_dynamo.onnx``.

Models: BERT (BertModel), ViT (ViTForImageClassification, 32x32 image, patch 8),
GPT-2 (GPT2LMHeadModel, use_cache=False), LLaMA (LlamaModel, grouped-query
attention with 4 query / 2 key-value heads, SwiGLU MLP, rotary embeddings,
use_cache=False) and the Whisper encoder (WhisperEncoder, 16 mel bins,
max_source_positions 16 -> 32 input frames).  Text models take ``input_ids``
(int64) and ``attention_mask`` (int64) with dynamic batch and sequence axes;
ViT and Whisper have a dynamic batch axis.  If the dynamo exporter cannot
export the dynamic shapes it is retried with static shapes (said in the README).

``attention_op23.onnx`` is a hand-written self-attention block at opset 23 that
uses the standard ONNX ``Attention`` op on 3-D Q/K/V.

Every file is checked with ``onnx.checker`` and run once in onnxruntime against
the PyTorch output (max abs diff printed; dynamic files are also run at a second
shape).  An exporter failure is printed as one line and the script goes on.
Dynamo files have their per-node ``pkg.torch.onnx.stack_trace`` metadata
removed (it embeds local file paths).

Run with a virtualenv holding torch==2.13.0 and transformers==5.24.0 (plus onnx,
onnxscript, onnxruntime):

    /path/to/venv-with-transformers/bin/python tools/export_transformers.py [--out models/transformers]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from model_readme import write_model_readme  # noqa: E402

SEED = 0
TS_OPSET = 17
DYNAMO_OPSET = 18
ATTENTION_OPSET = 23
BATCH = 2
SEQ = 16
VOCAB = 500
HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
MAX_POSITIONS = 512  # the BERT default: the analysis default sequence of 128 fits
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "models" / "transformers"
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
TOLERANCE = 1e-3


# --------------------------------------------------------------------------- models


class LastHidden(nn.Module):
    """Return one tensor field of a Hugging Face model output (the exporters want plain tensors)."""

    def __init__(self, model: nn.Module, field: str) -> None:
        super().__init__()
        self.model = model
        self.field = field

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(*args), self.field)


class TextWrapper(LastHidden):
    """input_ids + attention_mask -> one output tensor."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        kwargs = {"use_cache": False} if getattr(self.model.config, "use_cache", None) is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return getattr(out, self.field)


class ImageWrapper(LastHidden):
    """pixel_values -> one output tensor."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return getattr(self.model(pixel_values=pixel_values), self.field)


class AudioWrapper(LastHidden):
    """input_features -> one output tensor."""

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return getattr(self.model(input_features=input_features), self.field)


def bert(attn: str) -> nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS, attn_implementation=attn,
    )
    return TextWrapper(transformers.BertModel(cfg), "last_hidden_state")


def vit(attn: str) -> nn.Module:
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, num_labels=10, attn_implementation=attn,
    )
    return ImageWrapper(transformers.ViTForImageClassification(cfg), "logits")


def gpt2(attn: str) -> nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTERMEDIATE,
        n_positions=MAX_POSITIONS, use_cache=False, attn_implementation=attn,
    )
    return TextWrapper(transformers.GPT2LMHeadModel(cfg), "logits")


def llama(attn: str) -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=2, intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS,
        hidden_act="silu", use_cache=False, attn_implementation=attn,
    )
    return TextWrapper(transformers.LlamaModel(cfg), "last_hidden_state")


def whisper_encoder(attn: str) -> nn.Module:
    cfg = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=16, d_model=HIDDEN, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
        decoder_layers=LAYERS, decoder_attention_heads=HEADS, encoder_ffn_dim=INTERMEDIATE,
        decoder_ffn_dim=INTERMEDIATE, max_source_positions=16, max_target_positions=MAX_POSITIONS,
        use_cache=False, attn_implementation=attn,
    )
    return AudioWrapper(transformers.models.whisper.modeling_whisper.WhisperEncoder(cfg), "last_hidden_state")


def text_inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    """Random token ids and a mask with the last quarter of the last row padded."""
    g = torch.Generator().manual_seed(SEED + batch * 100 + seq)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq - seq // 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + batch)
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}


def audio_inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + batch)
    return {"input_features": torch.randn(batch, 16, 32, generator=g)}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One model family: builder, inputs and which axes are dynamic."""

    name: str
    title: str
    build: Callable[[str], nn.Module]
    inputs: Callable[[int, int], dict[str, torch.Tensor]]
    output: str
    dynamic: dict[str, dict[int, str]]  # input -> {axis: name}
    input_doc: str


TEXT_DYNAMIC = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
TEXT_DOC = "input_ids int64 [batch, sequence], attention_mask int64 [batch, sequence] (exported at 2x16)"
SPECS = [
    Spec("bert", "BertModel", bert, text_inputs, "last_hidden_state", TEXT_DYNAMIC, TEXT_DOC),
    Spec("vit", "ViTForImageClassification", vit, image_inputs, "logits",
         {"pixel_values": {0: "batch"}}, "pixel_values float32 [batch, 3, 32, 32]"),
    Spec("gpt2", "GPT2LMHeadModel", gpt2, text_inputs, "logits", TEXT_DYNAMIC, TEXT_DOC),
    Spec("llama", "LlamaModel (GQA 4q/2kv)", llama, text_inputs, "last_hidden_state", TEXT_DYNAMIC, TEXT_DOC),
    Spec("whisper_encoder", "WhisperEncoder", whisper_encoder, audio_inputs, "last_hidden_state",
         {"input_features": {0: "batch"}}, "input_features float32 [batch, 16, 32]"),
]
# (file suffix, exporter, attn_implementation)
VARIANTS = [("ts", "ts", "eager"), ("sdpa_ts", "ts", "sdpa"), ("dynamo", "dynamo", "sdpa")]


# --------------------------------------------------------------------------- export


def perturb(model: nn.Module) -> None:
    """Add seeded noise to every parameter.

    Hugging Face initialises all biases to 0 and all LayerNorm weights to 1; the
    TorchScript exporter then deduplicates those equal initializers into one
    tensor read through Identity nodes, which trained models never show.
    """
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)


def export_torchscript(model: nn.Module, spec: Spec, inputs: dict[str, torch.Tensor], path: pathlib.Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(inputs.values()),
            str(path),
            dynamo=False,
            opset_version=TS_OPSET,
            do_constant_folding=True,
            input_names=list(inputs),
            output_names=[spec.output],
            dynamic_axes={**spec.dynamic, spec.output: {0: "batch"}},
        )
    return True


def export_dynamo(model: nn.Module, spec: Spec, inputs: dict[str, torch.Tensor], path: pathlib.Path) -> bool:
    """Export with dynamic shapes; fall back to static shapes. Returns whether the shapes are dynamic."""
    dims = {"batch": torch.export.Dim("batch", min=1, max=64), "sequence": torch.export.Dim("sequence", min=2, max=MAX_POSITIONS)}
    dynamic_shapes = {k: {axis: dims[name] for axis, name in spec.dynamic[k].items()} for k in inputs}
    program = None
    for shapes in (dynamic_shapes, None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    (),
                    kwargs=inputs,
                    dynamo=True,
                    opset_version=DYNAMO_OPSET,
                    dynamic_shapes=shapes,
                    external_data=False,
                    verbose=False,
                    input_names=list(inputs),
                    output_names=[spec.output],
                )
            break
        except Exception as exc:  # noqa: BLE001
            if shapes is None:
                raise
            print(f"  {path.name}: dynamic-shape dynamo export failed ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:160]}); retrying with static shapes")
    assert program is not None
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE_KEY, None)
    program.save(str(path), external_data=False)
    return shapes is not None


def ort_max_diff(path: pathlib.Path, model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in sess.get_inputs()}
    feeds = {k: v.numpy() for k, v in inputs.items() if k in feed_names}
    (got,) = sess.run(None, feeds)
    with torch.no_grad():
        want = model(**inputs).numpy()
    if got.shape != want.shape:
        raise AssertionError(f"shape {got.shape} != {want.shape}")
    return float(np.max(np.abs(got - want)))


@dataclasses.dataclass(frozen=True)
class FileInfo:
    name: str
    model: str
    exporter: str
    opset: int
    attn: str
    inputs: str
    size: int


def export_variant(spec: Spec, suffix: str, exporter: str, attn: str, out: pathlib.Path) -> FileInfo | None:
    name = f"{spec.name}_{suffix}.onnx"
    path = out / name
    torch.manual_seed(SEED)
    try:
        model = spec.build(attn).eval()
        perturb(model)
        got = getattr(model.model.config, "_attn_implementation", attn)
        if got != attn:
            raise RuntimeError(f"asked for attn_implementation={attn}, model uses {got}")
        inputs = spec.inputs(BATCH, SEQ)
        if exporter == "ts":
            dynamic = export_torchscript(model, spec, inputs, path)
        else:
            dynamic = export_dynamo(model, spec, inputs, path)
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: EXPORT FAILED ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
        logging.debug("".join(traceback.format_exception(exc)))
        path.unlink(missing_ok=True)
        return None
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    diff = ort_max_diff(path, model, inputs)
    msg = f"  {name}: opset {opset}, {path.stat().st_size / 1024:.1f} KB, max abs diff {diff:.2e}"
    if dynamic:
        second = spec.inputs(1, 10)
        diff2 = ort_max_diff(path, model, second)
        msg += f" (at {', '.join('x'.join(map(str, v.shape)) for v in second.values())}: {diff2:.2e})"
        diff = max(diff, diff2)
    print(msg)
    if diff > TOLERANCE:
        print(f"  {name}: WARNING diff {diff:.2e} above {TOLERANCE}")
    doc = spec.input_doc if dynamic else spec.input_doc.replace("batch", "2").replace("sequence", "16") + " (static)"
    exp = "TorchScript (`dynamo=False`)" if exporter == "ts" else "dynamo (`dynamo=True`)"
    return FileInfo(name, spec.title, exp, opset, attn, doc, path.stat().st_size)


# --------------------------------------------------------------------------- hand-written Attention op


def attention_op23(out: pathlib.Path) -> FileInfo:
    """X [1,16,64] -> Q/K/V MatMul+Add -> Attention(q_num_heads=4, kv_num_heads=4) -> MatMul+Add -> Y."""
    name = "attention_op23.onnx"
    path = out / name
    rng = np.random.default_rng(SEED)
    inits, nodes = [], []

    def const(n: str, shape: tuple[int, ...]) -> str:
        scale = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.1
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), n))
        return n

    for p in ("q", "k", "v"):
        nodes.append(helper.make_node("MatMul", ["X", const(f"{p}_proj.weight", (HIDDEN, HIDDEN))], [f"{p}_mm"], name=f"{p}_matmul"))
        nodes.append(helper.make_node("Add", [f"{p}_mm", const(f"{p}_proj.bias", (HIDDEN,))], [p.upper()], name=f"{p}_add"))
    nodes.append(helper.make_node("Attention", ["Q", "K", "V"], ["attn"], name="attention", q_num_heads=HEADS, kv_num_heads=HEADS))
    nodes.append(helper.make_node("MatMul", ["attn", const("o_proj.weight", (HIDDEN, HIDDEN))], ["o_mm"], name="o_matmul"))
    nodes.append(helper.make_node("Add", ["o_mm", const("o_proj.bias", (HIDDEN,))], ["Y"], name="o_add"))
    graph = helper.make_graph(
        nodes, "attention_op23",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, SEQ, HIDDEN])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, SEQ, HIDDEN])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ATTENTION_OPSET)],
                              producer_name="onnxprune tools/export_transformers.py")
    proto.ir_version = 11  # the IR version that came with opset 23 (onnx 1.18)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))

    # numpy reference
    w = {i.name: numpy_helper.to_array(i) for i in inits}
    x = np.random.default_rng(SEED + 1).standard_normal((1, SEQ, HIDDEN)).astype(np.float32)
    q, k, v = (x @ w[f"{p}_proj.weight"] + w[f"{p}_proj.bias"] for p in "qkv")
    split = lambda t: t.reshape(1, SEQ, HEADS, HIDDEN // HEADS).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(HIDDEN // HEADS)
    p_ = np.exp(s - s.max(-1, keepdims=True))
    p_ /= p_.sum(-1, keepdims=True)
    a = (p_ @ split(v)).transpose(0, 2, 1, 3).reshape(1, SEQ, HIDDEN)
    want = a @ w["o_proj.weight"] + w["o_proj.bias"]
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"X": x})
        print(f"  {name}: opset {ATTENTION_OPSET}, {path.stat().st_size / 1024:.1f} KB, "
              f"onnxruntime {ort.__version__} runs it, max abs diff vs numpy {np.max(np.abs(got - want)):.2e}")
        runs = "runs in onnxruntime " + ort.__version__
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: onnxruntime {ort.__version__} cannot run it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        runs = f"does not run in onnxruntime {ort.__version__}"
    return FileInfo(name, f"hand-written self-attention block (ONNX Attention op, {runs})", "onnx.helper",
                    ATTENTION_OPSET, "Attention op (q_num_heads=4, kv_num_heads=4, 3-D Q/K/V)",
                    "X float32 [1, 16, 64]", path.stat().st_size)


# --------------------------------------------------------------------------- README


INTRO = """# Tiny transformer test models

These ONNX files are tiny, random-weight (seeded) Hugging Face transformers,
made by `tools/export_transformers.py` for the onnxprune tests: hidden size 64,
2 layers, 4 attention heads (head_dim 16), intermediate size 128, vocabulary
500, sequence length 16 (BERT, GPT-2, LLaMA), ViT on 32x32 images with 8x8
patches, and the Whisper encoder on 16 mel bins x 32 frames. LLaMA uses
grouped-query attention (4 query heads, 2 key/value heads), a SwiGLU MLP and
rotary embeddings; GPT-2 and LLaMA are exported with `use_cache=False`.
Each model is exported with the TorchScript exporter (`_ts`: eager attention;
`_sdpa_ts`: sdpa attention; opset 17) and with the dynamo/torch.export exporter
(`_dynamo`: sdpa attention, opset 18). `attention_op23.onnx` is a hand-written
self-attention block using the standard ONNX `Attention` op (opset 23).
Weights are inlined (no external data). Regenerate them (deterministically) in
a virtualenv with torch==2.13.0 and transformers==5.24.0 (plus onnx, onnxscript,
onnxruntime):

```
/path/to/venv-with-transformers/bin/python tools/export_transformers.py
```
"""
COLUMNS = ["file", "model", "exporter", "opset", "attention", "inputs", "size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--only", nargs="*", help="model names to export (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("torch", "onnxscript", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)

    infos: list[FileInfo] = []
    failed: list[str] = []
    for spec in SPECS:
        if args.only and spec.name not in args.only:
            continue
        print(spec.name)
        for suffix, exporter, attn in VARIANTS:
            info = export_variant(spec, suffix, exporter, attn, args.out)
            if info is None:
                failed.append(f"{spec.name}_{suffix}.onnx")
            else:
                infos.append(info)
    if not args.only or "attention" in args.only:
        print("attention")
        infos.append(attention_op23(args.out))

    rows = [f"| `{i.name}` | {i.model} | {i.exporter} | {i.opset} | {i.attn} | {i.inputs} | {i.size / 1024:.1f} KB |"
            for i in infos]
    intro = INTRO + (f"\nNot exported (exporter failed): {', '.join(f'`{f}`' for f in failed)}.\n" if failed else "")
    if not args.only:
        write_model_readme(args.out, intro, COLUMNS, rows, [i.size for i in infos])
    print(f"{len(infos)} files written to {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
