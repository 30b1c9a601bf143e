"""Neuron merging: exactness oracles (a removed filter that is an exact multiple of a kept one)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import handmade
import oracle
from onnxprune import OnnxPruneError, apply_plan, make_plan, prune
from onnxprune.analysis.analyze import build_analysis
from onnxprune.api import run_pipeline
from onnxprune.rewrite.merging import MergeOptions
from onnxprune.loading import prepare
from conftest import ROOT

EXACT = 1e-5


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def _with(model: onnx.ModelProto, **arrays: np.ndarray) -> onnx.ModelProto:
    """A copy with some initializers replaced (keyword names use __ for dots)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        key = t.name.replace(".", "__")
        if key in arrays:
            t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[key], np.float32), t.name))
    return out


def _multiple(w: dict, conv: str, n: int, m: int, s: float) -> dict[str, np.ndarray]:
    """Filter and bias of channel n made s times those of channel m."""
    wt, b = w[f"{conv}.weight"].copy(), w[f"{conv}.bias"].copy()
    wt[n], b[n] = s * wt[m], s * b[m]
    return {f"{conv}__weight": wt, f"{conv}__bias": b}


def _prune(model, removed: dict[str, list[int]], **options):
    """(pruned model, per-group compensation outcomes) for an explicit plan."""
    prep = prepare(model)
    plan = make_plan(build_analysis(prep), removed)
    r = run_pipeline(prepare(model), plan=plan, merge=MergeOptions.from_keywords(**options))
    return r.model, {g: o.to_json() for g, o in r.compensation.outcomes.items()}


def _error(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    """Largest output difference relative to the output scale, on one random input."""
    x = oracle.feeds(a)
    want, got = oracle.run(a, x)[0], oracle.run(b, x)[0]
    return float(np.abs(want - got).max() / np.abs(want).max())


def _conv_conv1x1(seed: int = 0, act: str | None = None) -> onnx.ModelProto:
    """conv1(3->8, 3x3) [-> act] -> conv2(8->5, 1x1, no padding) -> y."""
    b = handmade.Builder(seed)
    h = b.conv("x", 3, 8)
    if act:
        h = b.op(act, [h])
    b.conv(h, 8, 5, 1, out="y")
    return b.model("conv_conv1x1", handmade.X2D_SMALL)


@pytest.mark.parametrize("s", [2.5, -0.7])
def test_no_activation_merges_any_sign_exactly(s: float) -> None:
    base = _conv_conv1x1()
    model = _with(base, **_multiple(_weights(base), "conv1", 5, 2, s))
    merged, outcome = _prune(model, {"conv1": [5]})
    plain, _ = _prune(model, {"conv1": [5]}, compensate="none")
    assert outcome["conv1"]["merged"] == 1
    assert _error(model, merged) < EXACT
    assert _error(model, plain) > 100 * EXACT


def test_relu_merges_positive_multiple_and_never_negative() -> None:
    base = _conv_conv1x1(act="Relu")
    w = _weights(base)
    good = _with(base, **_multiple(w, "conv1", 5, 2, 1.7))
    merged, outcome = _prune(good, {"conv1": [5]})
    assert outcome["conv1"]["merged"] == 1 and _error(good, merged) < EXACT
    bad = _with(base, **_multiple(w, "conv1", 5, 2, -1.7))
    _, outcome = _prune(bad, {"conv1": [5]})
    assert outcome["conv1"]["merged"] == 0
    assert "scale <= 0 through an activation" in outcome["conv1"]["pruned_because"]
    _, outcome = _prune(bad, {"conv1": [5]}, merge_threshold=0.0)  # another match may do, never channel 2
    assert outcome["conv1"].get("merged_into", {}).get("5") != 2


def _bn_relu_chain(w: dict, n: int, m: int, s: float) -> dict[str, np.ndarray]:
    """conv1's filter n = s x filter m, and bn1's beta_n set so the bias residual B is zero."""
    arrays = _multiple(w, "conv1", n, m, s)
    g, beta, mu, var = (w[f"bn1.{k}"].copy() for k in ("gamma", "beta", "mean", "var"))
    sigma = np.sqrt(var + 1e-5)
    big_s = s * (g[n] / g[m]) * (sigma[m] / sigma[n])
    beta[n] = big_s * beta[m] - g[n] * (s * mu[m] - mu[n]) / sigma[n]
    return {**arrays, "bn1__beta": beta}


def test_batchnorm_exact_factor_through_relu() -> None:
    base = handmade.conv_bn_relu_chain()
    model = _with(base, **_bn_relu_chain(_weights(base), 6, 1, 1.3))
    merged, outcome = _prune(model, {"conv1": [6]})
    assert outcome["conv1"]["merged"] == 1
    assert _error(model, merged) < EXACT
    paper, _ = _prune(model, {"conv1": [6]}, merge_mode="paper")
    plain, _ = _prune(model, {"conv1": [6]}, compensate="none")
    assert _error(model, paper) > 100 * EXACT  # the released code's factor is not exact
    assert _error(model, plain) > 100 * EXACT


def test_batchnorm_residual_goes_into_the_bias_without_activation() -> None:
    b = handmade.Builder(3)
    b.conv(b.bn(b.conv("x", 3, 8), 8), 8, 5, 1, out="y")
    base = b.model("conv_bn_conv1x1", handmade.X2D_SMALL)
    model = _with(base, **_multiple(_weights(base), "conv1", 4, 0, -2.0))  # beta untouched: B != 0
    merged, outcome = _prune(model, {"conv1": [4]})
    assert outcome["conv1"]["merged"] == 1 and _error(model, merged) < EXACT


def test_residual_group_merges_when_every_producer_agrees() -> None:
    base = handmade.residual_add()
    w = _weights(base)
    producers = ["conv1", "conv3", "conv5"]  # stem and the two blocks' second convs share the group
    arrays = {}
    for conv in producers:
        arrays.update(_multiple(w, conv, 7, 3, 0.8))
    model = _with(base, **arrays)
    merged, outcome = _prune(model, {"conv1": [7]})
    assert outcome["conv1"]["merged"] == 1 and _error(model, merged) < EXACT
    one_off = dict(arrays, **_multiple(w, "conv5", 7, 3, 2.0))  # one producer with another scale
    model = _with(base, **one_off)
    _, outcome = _prune(model, {"conv1": [7]}, merge_threshold=0.0)
    assert outcome["conv1"]["merged"] == 0


def test_flatten_gemm_merges_every_expanded_feature() -> None:
    base = handmade.flatten_gemm()
    model = _with(base, **_multiple(_weights(base), "conv1", 4, 1, 0.6))
    merged, outcome = _prune(model, {"conv1": [4]})
    assert outcome["conv1"]["merged"] == 1 and _error(model, merged) < EXACT


def _dead_gamma(model: onnx.ModelProto, n: int) -> onnx.ModelProto:
    w = _weights(model)
    g = w["bn1.gamma"].copy()
    g[n] = 0.0
    return _with(model, bn1__gamma=g)


def test_constant_channel_folds_exactly_into_1x1_successor() -> None:
    b = handmade.Builder(5)
    b.conv(b.cbr("x", 3, 8), 8, 5, 1, out="y")
    base = b.model("cbr_conv1x1", handmade.X2D_SMALL)
    beta = _weights(base)["bn1.beta"].copy()
    beta[3] = 0.9  # relu(0.9) reaches the consumer as a constant
    model = _dead_gamma(_with(base, bn1__beta=beta), 3)
    for mode in ("merge", "fold"):
        folded, outcome = _prune(model, {"conv1": [3]}, compensate=mode)
        assert outcome["conv1"]["folded"] == 1 and _error(model, folded) < EXACT
    plain, _ = _prune(model, {"conv1": [3]}, compensate="none")
    assert _error(model, plain) > 100 * EXACT


def test_constant_into_padded_conv_is_reported_approximate_at_the_borders() -> None:
    base = handmade.conv_bn_relu_chain()
    beta = _weights(base)["bn1.beta"].copy()
    beta[2] = 0.5
    model = _dead_gamma(_with(base, bn1__beta=beta), 2)
    _, outcome = _prune(model, {"conv1": [2]}, compensate="fold")
    record = outcome["conv1"]["channels"]["2"]
    assert outcome["conv1"]["folded"] == 1 and outcome["conv1"]["approximate"] == 1
    assert record["into"] is None and not record["exact"] and "borders" in record["because"]


def test_gemm_consumer_without_bias_receives_one() -> None:
    b = handmade.Builder(2)
    h = b.conv("x", 3, 6)
    b.conv(h, 6, 4, 1, bias=False, out="y")
    base = b.model("conv_conv_nobias", handmade.X2D_SMALL)
    w = _weights(base)
    bias = w["conv1.bias"].copy()
    wt = w["conv1.weight"].copy()
    wt[2] = 0.0
    bias[2] = 1.5  # a constant channel: its value must land in the consumer's new bias
    model = _with(base, conv1__weight=wt, conv1__bias=bias)
    folded, outcome = _prune(model, {"conv1": [2]})
    assert outcome["conv1"]["folded"] == 1 and _error(model, folded) < EXACT
    conv2 = next(n for n in folded.graph.node if n.name == "conv2")
    assert len(conv2.input) == 3


def test_nonhomogeneous_activation_needs_the_flag_unless_the_channels_are_equal() -> None:
    base = _conv_conv1x1(act="Sigmoid")
    model = _with(base, **_multiple(_weights(base), "conv1", 5, 2, 1.5))
    _, outcome = _prune(model, {"conv1": [5]})
    assert outcome["conv1"]["merged"] == 0
    assert any("non-homogeneous" in k and "--merge-approximate" in k for k in outcome["conv1"]["pruned_because"])
    merged, outcome = _prune(model, {"conv1": [5]}, merge_approximate=True)
    record = outcome["conv1"]["channels"]["5"]
    assert record["into"] == 2 and not record["exact"] and "non-homogeneous" in record["because"]
    equal = _with(base, **_multiple(_weights(base), "conv1", 5, 2, 1.0))
    merged, outcome = _prune(equal, {"conv1": [5]})  # s = 1: sigmoid(a) = sigmoid(a), exact without the flag
    assert outcome["conv1"]["channels"]["5"] == {"into": 2, "exact": True}
    assert _error(equal, merged) < EXACT


def test_low_similarity_is_only_pruned() -> None:
    model = _conv_conv1x1()
    _, outcome = _prune(model, {"conv1": [5]}, merge_threshold=0.999, merge_approximate=True)
    assert outcome["conv1"] == {"merged": 0, "folded": 0, "pruned_only": 1,
                                "pruned_because": {"no kept filter similar enough": 1}}  # no channel record
    _, outcome = _prune(model, {"conv1": [5]})  # without approximations only exact multiples merge
    assert outcome["conv1"]["pruned_because"] == {"no kept filter is an exact multiple (approximate merges need "
                                                  "--merge-approximate)": 1}


def test_prune_api_reports_compensation_and_refuses_bad_options(tmp_path) -> None:
    _, _, report = prune(handmade.conv_bn_relu_chain(), ratio=0.5, merge_threshold=0.0, merge_approximate=True)
    total = report["total"]["compensation"]
    assert total["merged"] + total["folded"] + total["pruned_only"] == report["total"]["channels_removed"]
    assert total["merged"] > 0 and total["approximate"] == total["merged"] + total["folded"] - total["exact"]
    with pytest.raises(OnnxPruneError, match="unknown compensation"):
        prune(handmade.conv_bn_relu_chain(), ratio=0.5, compensate="blend")
    with pytest.raises(OnnxPruneError, match="merge-threshold"):
        prune(handmade.conv_bn_relu_chain(), ratio=0.5, merge_threshold=2.0)


def test_sequential_order_matches_on_rows_left_by_earlier_groups() -> None:
    model = handmade.conv_bn_relu_chain()
    removed = {"conv1": [0, 1, 2, 3], "conv2": [0, 1, 2, 3, 4, 5]}
    _, original = _prune(model, removed, merge_threshold=0.0, merge_approximate=True)
    _, sequential = _prune(model, removed, merge_threshold=0.0, merge_order="sequential", merge_approximate=True)
    assert original["conv1"] == sequential["conv1"]  # the first group sees the same rows either way
    assert original["conv2"]["merged_into"] != sequential["conv2"]["merged_into"]


LENET = ROOT / "models" / "fashion" / "lenet300.onnx"


def test_merging_beats_pruning_on_the_trained_lenet() -> None:
    """Trained LeNet-300-100 at 70%: merged logits stay closer to the original than pruned ones."""
    x = {"image": np.random.default_rng(0).random((64, 1, 28, 28), np.float32)}
    want = oracle.run(onnx.load(LENET), x)[0]
    errors = {}
    for mode in ("none", "merge"):
        model, _, _ = prune(LENET, ratio=0.7, compensate=mode, merge_threshold=0.3, merge_approximate=True)
        errors[mode] = float(np.linalg.norm(oracle.run(model, x)[0] - want) / np.linalg.norm(want))
    assert errors["merge"] < 0.8 * errors["none"], errors


def test_per_channel_arithmetic_carries_the_relation_exactly() -> None:
    """conv -> Mul -> Add -> Sub -> Div (per-channel constants) -> Relu -> conv: exact when offsets cancel."""
    base = handmade.per_channel_consts()
    w = _weights(base)
    n, m, s = 6, 1, 1.4
    arrays = _multiple(w, "conv1", n, m, s)
    mul, add, sub, div = (w[k].copy() for k in ("mul1.scale", "add1.shift", "sub1.shift", "div1.scale"))
    k = s * mul.flat[n] / mul.flat[m]  # the scale after Mul; Add and Sub must keep the offset at zero
    add.flat[n], sub.flat[n] = k * add.flat[m], k * sub.flat[m]
    model = _with(base, **arrays, mul1__scale=mul, add1__shift=add, sub1__shift=sub, div1__scale=div)
    merged, outcome = _prune(model, {"conv1": [n]})
    plain, _ = _prune(model, {"conv1": [n]}, compensate="none")
    assert outcome["conv1"]["merged_into"] == {str(n): m}
    assert _error(model, merged) < EXACT
    assert _error(model, plain) > 100 * EXACT


def test_a_plan_replays_with_the_compensation_it_records() -> None:
    model = handmade.conv_bn_relu_chain()
    plain, plan, _ = prune(model, ratio=0.5, compensate="none")
    merged, _, _ = prune(model, ratio=0.5, merge_threshold=0.0)
    assert plan["compensation"]["compensate"] == "none"
    assert apply_plan(model, plan).SerializeToString() == plain.SerializeToString()
    assert apply_plan(model, plan, compensate="merge", merge_threshold=0.0).SerializeToString() == \
        merged.SerializeToString()
    with pytest.raises(OnnxPruneError, match="unknown compensation option 'threshold'"):
        apply_plan(model, dict(plan, compensation={"threshold": 0.3}))
    with pytest.raises(OnnxPruneError, match="unknown compensation option 'merge_treshold'"):
        prune(model, ratio=0.5, merge_treshold=0.3)
