"""Hugging Face exports (tools/export_transformers.py): heads and FFN units prunable and exact under the oracle."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import oracle
from conftest import ROOT, cli
from onnxprune import analyze

EXPORTS = sorted((ROOT / "models" / "transformers").glob("*.onnx"))
HEADS = {"bert": 4, "gpt2": 4, "vit": 4, "whisper_encoder": 4, "llama": 2, "attention_op23": 4}  # llama: K/V heads


def _family(stem: str) -> str:
    return next(k for k in HEADS if stem.startswith(k))


def test_exports_present() -> None:
    assert len(EXPORTS) >= 16, "models/transformers is incomplete: see tools/export_transformers.py"


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_dead_units_of_every_prunable_group(path) -> None:
    """A random ~40 % of every prunable group, dead, pruned at once: outputs unchanged."""
    model = onnx.load(path)
    analysis = analyze(model)
    rng = np.random.default_rng(3)
    removed = {g.id: oracle.subsets(g.channels, rng)["random"] for g in analysis.prunable}
    assert removed
    oracle.check_dead_channels(model, removed)


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_heads_are_units(path) -> None:
    """Every export (TorchScript, sdpa, dynamo, the Attention op): each layer's heads form one prunable group."""
    analysis = analyze(path)
    heads = [g for g in analysis.prunable if g.channels == HEADS[_family(path.stem)]]
    assert len(heads) == (1 if path.stem.startswith("attention") else 2)
    all_but_one = {g.id: list(range(1, g.channels)) for g in heads}
    oracle.check_dead_channels(onnx.load(path), all_but_one)


def test_batch_fold_without_its_unfold_is_refused() -> None:
    """Heads folded into the batch axis ([B, H, S, D] -> [B*H, S, D]) and never split back: frozen, said so."""
    import transformer_graphs as tg
    from handmade import Builder

    b = Builder(0)
    q = b.op("Transpose", [b.op("Reshape", [b.op("MatMul", ["x", b.randn([tg.C, tg.C], tg.C, "w")]),
                                            b.ints([0, 0, tg.H, tg.D])])], perm=[0, 2, 1, 3])
    b.op("Reshape", [q, b.ints([-1, tg.S, tg.D])], out="y")
    model = b.model("fold", [1, tg.S, tg.C])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "folded"
    analysis = analyze(model)
    assert not analysis.prunable
    assert any("dynamic axis before it" in r for g in analysis.groups for r in g.reasons)


def test_prune_llama_with_token_calibration(tmp_path) -> None:
    """CLI: a GQA model pruned by wanda on integer input_ids calibration data, validated on them."""
    src, out, report = ROOT / "models/transformers/llama_ts.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    rng = np.random.default_rng(0)
    calib = tmp_path / "ids.npz"
    np.savez(calib, input_ids=rng.integers(0, 500, (8, 32)).astype(np.int64),
             attention_mask=np.ones((8, 32), np.int64))
    r = cli("prune", str(src), "-o", str(out), "--criterion", "wanda", "--ratio", "0.5", "--round-to", "1", "--calib", str(calib),
            "--validate", "--data", str(calib), "--report", str(report))
    assert r.returncode == 0, r.stderr
    groups = {g["id"]: g for g in json.loads(report.read_text())["groups"]}
    kv = [g for g in groups.values() if g["channels_before"] == 2]
    assert kv and all(g["channels_after"] == 1 for g in kv)
    pruned = onnx.load(out)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    q = [dims[n.input[1]] for n in pruned.graph.node if "q_proj" in n.name and n.op_type == "MatMul"]
    assert q and all(d == [64, 32] for d in q)  # 2 of 4 Q heads go with their K/V head
