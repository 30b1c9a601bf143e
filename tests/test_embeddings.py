"""Embedding models are not classifiers: the embedding task, its allocation loss, bench's batch, true reasons
for head groups, FLAP's standardised ranking and the notes on --global and nearly emptied groups."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import handmade
import transformer_graphs
from conftest import cli
from onnxprune.validation.tasks import TaskOptions, neighbour_agreement, pick, unit


def _embedder(seed: int = 0, normalise: bool = True, output: str = "out") -> onnx.ModelProto:
    """tokens [N, 5, 16] -> two ReLU MLP layers (32, 32 units) -> 24 -> mean over tokens -> L2-normalised."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "tokens"
    for i, (a, b) in enumerate([(16, 32), (32, 32), (32, 24)]):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(b).astype(np.float32) * 0.1, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}")]
        x = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    pooled = "pooled" if normalise else output
    nodes.append(helper.make_node("ReduceMean", [x], [pooled], axes=[1], keepdims=0, name="pool"))
    if normalise:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes += [helper.make_node("Mul", [pooled, pooled], ["sq"], name="sq"),
                  helper.make_node("ReduceSum", ["sq", "axis1"], ["ss"], keepdims=1, name="ss"),
                  helper.make_node("Sqrt", ["ss"], ["norm"], name="norm"),
                  helper.make_node("Div", [pooled, "norm"], [output], name="l2")]
    graph = helper.make_graph(nodes, "embedder", [helper.make_tensor_value_info("tokens", TensorProto.FLOAT,
                                                                                 ["N", 5, 16])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 24])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture()
def embedder(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "embedder.onnx"
    onnx.save(_embedder(), model)
    data = tmp_path / "tokens.npz"
    np.savez(data, tokens=np.random.default_rng(1).standard_normal((96, 5, 16)).astype(np.float32))
    return model, data


def _naive_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Each sample's k nearest by cosine, one sample at a time (the oracle)."""
    a, b = unit(a), unit(b)
    hits = 0
    for i in range(len(a)):
        sa, sb = a @ a[i], b @ b[i]
        sa[i] = sb[i] = -np.inf
        hits += len(set(np.argsort(-sa)[:k]) & set(np.argsort(-sb)[:k]))
    return hits / (len(a) * k)


def test_neighbour_agreement_matches_the_naive_count() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 12))
    b = a + 0.7 * rng.standard_normal(a.shape)
    for k in (1, 5, 10):
        assert neighbour_agreement(unit(a), unit(b), k, chunk=16) == pytest.approx(_naive_agreement(a, b, k))
    assert neighbour_agreement(unit(a), unit(a), 10) == 1.0


def test_auto_reads_unit_norm_rows_and_embedding_names_as_embeddings() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 24)).astype(np.float32)
    assert pick(x / np.linalg.norm(x, axis=1, keepdims=True), "auto")[0] == "embedding"
    assert "unit L2 norm" in pick(x / np.linalg.norm(x, axis=1, keepdims=True), "auto")[1]
    assert pick(x, "auto", "sentence_embedding")[0] == "embedding"
    assert pick(x, "auto", "last_hidden_pooled")[0] == "embedding"
    assert pick(x, "auto", "logits")[0] == "classify"  # unnormalised [N, C] without an embedding name
    assert pick(x, "embedding", "logits")[0] == "embedding"
    with pytest.raises(Exception, match="--neighbours"):
        TaskOptions(neighbours=0)


def test_validate_reads_an_embedding_as_one(embedder: tuple[Path, Path], tmp_path: Path) -> None:
    """A mean-pooled, L2-normalised output: cosine per sample and neighbour agreement, not top-1 of an argmax."""
    model, data = embedder
    pruned = tmp_path / "p.onnx"
    assert cli("prune", str(model), "-o", str(pruned), "--ratio", "0.5", "--no-verify").returncode == 0
    r = cli("validate", str(model), str(pruned), "--data", str(data), "--json", str(tmp_path / "v.json"))
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "v.json").read_text())["outputs"]["out"]
    assert out["task"] == "embedding" and "unit L2 norm" in out["task_why"] and "top1_agreement" not in out
    assert 0 <= out["neighbour_agreement"] < 1 and out["neighbours"] == 10 and out["samples"] == 96
    assert 0 < out["mean_cosine"] < 1 and out["min_cosine"] <= out["mean_cosine"]
    assert "neighbour agreement" in r.stdout
    same = cli("validate", str(model), str(model), "--data", str(data), "--neighbours", "5", "--json",
               str(tmp_path / "s.json"))
    assert same.returncode == 0, same.stderr
    out = json.loads((tmp_path / "s.json").read_text())["outputs"]["out"]
    assert out["neighbour_agreement"] == 1.0 and out["neighbours"] == 5 and out["mean_cosine"] == pytest.approx(1)
    gate = cli("validate", str(model), str(pruned), "--data", str(data), "--max-drop", "0.5")
    assert gate.returncode == 1 and "neighbour agreement" in gate.stderr


def test_allocation_loss_of_an_embedding_is_its_neighbours(embedder: tuple[Path, Path], tmp_path: Path) -> None:
    """--allocate sensitivity scores an embedding by the neighbours it loses (it took the argmax over the
    embedding's dimensions as a class, and kept the allocation that scored worst on the real metrics)."""
    model, data = embedder
    r = cli("prune", str(model), "-o", str(tmp_path / "a.onnx"), "--target-macs", "0.3", "--allocate",
            "sensitivity", "--calib", str(data), "--sensitivity-ratios", "0.25,0.5", "--report",
            str(tmp_path / "r.json"), quiet=False)
    assert r.returncode == 0, r.stderr
    alloc = json.loads((tmp_path / "r.json").read_text())["allocation"]
    assert alloc["metric"] == "neighbour_agreement" and "neighbours" in alloc["loss"]
    assert alloc["outputs"]["out"].startswith("embedding")
    assert "measured in neighbour_agreement" in r.stderr and "'out' embedding" in r.stderr
    losses = alloc["compared"]["losses"]
    assert all(0 <= v <= 1 for v in losses.values()) and losses[alloc["compared"]["kept"]] == min(losses.values())


def test_sensitivity_curves_of_an_embedding(embedder: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = embedder
    r = cli("sensitivity", str(model), "-o", str(tmp_path / "s.json"), "--data", str(data), "--ratios", "0.5")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["metric"] == "neighbour_agreement" and report["outputs"]["out"].startswith("embedding")
    assert all(0 <= p["neighbour_agreement"] <= 1 for g in report["groups"] for p in g["points"])


def test_bench_times_the_batch_of_shape(embedder: tuple[Path, Path], tmp_path: Path) -> None:
    """--shape's batch is the default batch, and the MACs printed are per sample of the shape timed."""
    model, _ = embedder
    r = cli("bench", str(model), str(model), "--shape", "tokens:8x5x16", "--runs", "2", "--warmup", "0", "--json",
            str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert list(report["batches"]) == ["8"] and report["batches"]["8"]["shapes"] == {"tokens": [8, 5, 16]}
    assert "batch   8 at tokens=8x5x16" in r.stdout and "MACs per sample at tokens=1x5x16" in r.stdout
    one = cli("bench", str(model), "--shape", "tokens:8x5x16", "--batch", "2", "--runs", "2", "--warmup", "0")
    assert "batch   2 at tokens=2x5x16" in one.stdout


def test_bench_refuses_shapes_a_model_cannot_run_in_one_line(tmp_path: Path) -> None:
    """Inputs of mismatched lengths fail inside onnxruntime: one line, exit 2 (was an internal error)."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", d]) for n, d in (("x", "a"),
                                                                                                       ("y", "b"))],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", "a"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    r = cli("bench", str(tmp_path / "two.onnx"), "--shape", "x:2x7", "--runs", "1", "--warmup", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not run at x=2x7" in r.stderr
    assert cli("bench", str(tmp_path / "two.onnx"), "--shape", "x:2x7", "--shape", "y:2x7", "--runs", "1").returncode == 0


def test_head_groups_name_blocks_not_concat(tmp_path: Path) -> None:
    """A head is head_dim positions with different biases: the reason says so, not a Concat that isn't there;
    a channel really concatenated twice still gets the Concat reason."""
    model = tmp_path / "bert.onnx"
    onnx.save(transformer_graphs.bert_block(), model)
    assert cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--round-to", "1", "--report",
               str(tmp_path / "r.json"), "--no-verify").returncode == 0
    reasons = {k for g in json.loads((tmp_path / "r.json").read_text())["groups"]
               for k in g.get("compensation", {}).get("pruned_because", {})}
    assert not any("Concat" in k for k in reasons)
    assert any("block of several positions" in k for k in reasons)
    b = handmade.Builder(9)
    h = b.relu(b.conv("x", 1, 4, 1, bias=False))
    cat = b.op("Concat", [h, b.conv(h, 4, 4, 1, bias=False)], axis=1)
    b.head(b.bn(b.op("Concat", [cat, cat], axis=1), 16), 16, 3)
    onnx.save(b.model("repeated_channel_bn", [1, 1, 8, 8], opset=11), tmp_path / "rep.onnx")
    assert cli("prune", str(tmp_path / "rep.onnx"), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.5", "--round-to", "1", "--report",
               str(tmp_path / "q.json"), "--no-verify").returncode == 0
    reasons = {k for g in json.loads((tmp_path / "q.json").read_text())["groups"]
               for k in g.get("compensation", {}).get("pruned_because", {})}
    assert any("repeated (Concat)" in k for k in reasons)


def test_flap_is_standardised_per_group() -> None:
    """A group whose FLAP scores are all small next to one large outlier is not emptied by a global ratio (it
    kept 1 of 20 with the mean-1 scaling the norms use); l1-style scaling of the same scores still does."""
    from onnxprune import analyze
    from onnxprune.scoring.score import GroupScores
    from onnxprune.selection import Selection, select

    analysis = analyze(handmade.conv_bn_relu_chain(0))
    a, b = analysis.prunable[:2]
    even = np.linspace(1, 2, a.channels)
    skewed = np.r_[np.linspace(0.01, 0.02, b.channels - 1), 100.0]
    for criterion, least in (("flap", 0.25), ("l1", None)):
        scores = {a.id: GroupScores(even, criterion), b.id: GroupScores(skewed, criterion)}
        removed = select(analysis, scores, Selection(ratio=0.5, global_rank=True))
        kept_b = b.channels - len(removed.get(b.id, []))
        if least is not None:
            assert kept_b >= least * b.channels and removed.get(a.id)
        else:
            assert kept_b <= 2  # the outcome FLAP's standardisation prevents


def test_global_with_a_target_says_it_changes_nothing(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(handmade.conv_bn_relu_chain(0), model)
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--target-macs", "0.3", "--global", quiet=False)
    assert r.returncode == 0 and "--global changes nothing" in r.stderr
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--target-macs", "0.3", quiet=False)
    assert "--global" not in r.stderr


def test_a_nearly_emptied_group_is_warned_about(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(handmade.conv_bn_relu_chain(0), model)
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.9", "--round-to", "1", "--global")
    assert r.returncode == 0 and "keep under 10% of their channels" in r.stderr and "--max-ratio" in r.stderr
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.9", "--round-to", "1", "--global", "--max-ratio", "0.8")
    assert r.returncode == 0 and "keep under" not in r.stderr
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.95", "--round-to", "1")  # uniform: what was asked
    assert "keep under" not in r.stderr
    assert "% kept)" in r.stdout
