"""Property-based fuzz over random valid CNN graphs (tests/random_graphs.py), plus the regression
tests the fuzz found (plain pytest functions at the end of this file).

Properties, for each drawn graph:
- analyze() never raises (any exception but OnnxPruneError is an internal error);
- the dead-channel oracle holds for a random subset of every prunable group (one group at a time, then
  all at once);
- ratio prunes (criteria l1 / l2 / fpgm / random / bn, global or not, round_to 1 / 2 / 4, compensate merge
  or none) raise nothing but OnnxPruneError, never refuse their own rewrite as invalid, and every model
  written passes onnx.checker (full check) and runs in onnxruntime with the original output shapes;
- the merge oracle (oracle.check_merge_exact): a removed channel made an exact multiple of a kept one (or a
  constant) is compensated exactly wherever the report says so.

Profiles: "ci" (default; derandomized, a few hundred graphs) and "long" (ONNXPRUNE_FUZZ=long; thousands,
random). ONNXPRUNE_FUZZ_EXAMPLES=N overrides the per-test count. ONNXPRUNE_FUZZ_COLLECT=FILE.jsonl records
failures there (one JSON line each, with a signature) instead of raising, to survey many distinct bugs in
one long run. Counts of graphs, groups and checks are printed at the end of the module and written to
ONNXPRUNE_FUZZ_STATS (default: fuzz_stats.json in pytest's base temp dir).
"""
from __future__ import annotations

import json
import os
import re
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import handmade
import oracle
from onnxprune import OnnxPruneError, analyze, prune

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import random_graphs

PROFILE = "long" if os.environ.get("ONNXPRUNE_FUZZ") == "long" else "ci"
EXAMPLES = {"ci": {"analyze": 300, "prune": 250, "merge": 350},
            "long": {"analyze": 4000, "prune": 3000, "merge": 4000}}[PROFILE]
if os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES"):
    EXAMPLES = dict.fromkeys(EXAMPLES, int(os.environ["ONNXPRUNE_FUZZ_EXAMPLES"]))
COLLECT = os.environ.get("ONNXPRUNE_FUZZ_COLLECT")

STATS: Counter = Counter()
MESSAGES: Counter = Counter()  # OnnxPruneError messages seen (digits and quoted names normalised)

# A refusal that means the tool built something wrong, not that the input is unsupported.
NOT_LEGITIMATE = ("does not check", "changes the shape")
# Refusals of a well-formed plan that the tool documents (counted in MESSAGES, not failures).
PLAN_REFUSALS = ("would leave a zero-width tensor",)

CRITERIA = ["l1", "l2", "fpgm", "random", "bn"]


# -- helpers --------------------------------------------------------------------------------------
class FuzzFailure(AssertionError):
    """A property violation, classified."""

    def __init__(self, kind: str, detail: str, model: onnx.ModelProto | None = None, extra: dict | None = None):
        self.extra = extra or {}
        where = f"\n  graph: {random_graphs.describe(model)}" if model is not None else ""
        super().__init__(f"[{kind}] {detail}{where}")
        self.kind, self.detail = kind, detail


def _normalise(text: str) -> str:
    text = re.sub(r"'[^']*'", "'*'", text)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)[:160]


def _location(exc: BaseException) -> str:
    """The innermost onnxprune frame of a traceback (file:line function)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/onnxprune/" in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename.split('/onnxprune/')[-1]}:{f.lineno} {f.name}"


def _internal(stage: str, exc: BaseException, model) -> FuzzFailure:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return FuzzFailure("internal error", f"{stage}: {type(exc).__name__}: {first} at {_location(exc)}", model)


def _report(failure: FuzzFailure, model: onnx.ModelProto | None) -> None:
    """Raise, or in collect mode append the failure to the JSONL file."""
    STATS["failures"] += 1
    if not COLLECT:
        raise failure
    sig = f"{failure.kind} | {_normalise(failure.detail.split(' after ')[0].split(': {')[0])}"
    record = {"signature": sig, "kind": failure.kind, "detail": failure.detail,
              "graph": random_graphs.describe(model) if model is not None else None,
              "nodes": len(model.graph.node) if model is not None else None, **failure.extra}
    with open(COLLECT, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT 1.32 mis-fuses Pad -> Conv when the Pad input is also a graph output
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _outputs(model: onnx.ModelProto, x: dict) -> list[np.ndarray]:
    return _session(model).run(None, x)


def _valid(model: onnx.ModelProto, x: dict, want_shapes: list[tuple], what: str, original) -> None:
    """Full checker, an onnxruntime run, and the original output shapes; else FuzzFailure."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker complaint is the finding
        raise FuzzFailure("invalid model written", f"{what}: checker: {str(exc).strip().splitlines()[0][:300]}",
                          original) from None
    try:
        got = _outputs(model, x)
    except Exception as exc:  # noqa: BLE001
        raise FuzzFailure("invalid model written", f"{what}: onnxruntime: {str(exc).strip().splitlines()[0][:300]}",
                          original) from None
    shapes = [tuple(o.shape) for o in got]
    if shapes != want_shapes:
        raise FuzzFailure("invalid model written", f"{what}: output shapes {shapes} != {want_shapes}", original)


def _generated(model: onnx.ModelProto) -> dict:
    """The generator's own contract: checker-valid, runs; returns feeds."""
    STATS["graphs"] += 1
    onnx.checker.check_model(model, full_check=True)  # a failure here is a generator bug
    x = oracle.feeds(model)
    _outputs(model, x)
    return x


def _analyze(model: onnx.ModelProto):
    try:
        return analyze(model)
    except OnnxPruneError as exc:  # valid graphs should not be refused either
        raise FuzzFailure("analyze refused a valid graph", str(exc), model) from None
    except Exception as exc:  # noqa: BLE001
        raise _internal("analyze", exc, model) from exc


# -- the properties, as functions of (model, draw) so a survey script can call them too -----------
def check_dead_channel_property(model: onnx.ModelProto, draw) -> None:
    _generated(model)
    analysis = _analyze(model)
    groups = analysis.prunable
    STATS["groups"] += len(analysis.groups)
    STATS["prunable_groups"] += len(groups)
    removed = {}
    for g in groups:
        if g.channels < 2:
            continue
        idx = sorted(draw(st.lists(st.integers(0, g.channels - 1), min_size=1, max_size=g.channels - 1,
                                   unique=True), label=f"removed from {g.id}"))
        removed[g.id] = idx
        _dead(model, {g.id: idx}, f"group {g.id} alone, channels {idx}")
    if len(removed) > 1:
        _dead(model, removed, f"all groups at once {removed}")


def _plan_refusal(exc: OnnxPruneError, what: str, model) -> None:
    """Count a documented refusal of a plan; any other refusal of a well-formed plan is a failure."""
    if not any(s in str(exc) for s in PLAN_REFUSALS):
        kind = "invalid model written" if any(s in str(exc) for s in NOT_LEGITIMATE) else "refused a valid plan"
        raise FuzzFailure(kind, f"{what}: OnnxPruneError: {exc}", model) from None
    MESSAGES[_normalise(str(exc))] += 1


def _dead(model, removed, what) -> None:
    STATS["dead_channel_checks"] += 1
    try:
        oracle.check_dead_channels(model, removed)
    except AssertionError as exc:
        raise FuzzFailure("dead-channel oracle mismatch", f"{what}: {str(exc).splitlines()[0][:300]}", model) from None
    except OnnxPruneError as exc:
        _plan_refusal(exc, what, model)
        return
    except Exception as exc:  # noqa: BLE001
        raise _internal(f"dead-channel prune ({what})", exc, model) from exc


def check_ratio_prune_property(model: onnx.ModelProto, draw) -> None:
    x = _generated(model)
    want = [tuple(o.shape) for o in _outputs(model, x)]
    for _ in range(3):
        cfg = dict(ratio=draw(st.sampled_from([0.25, 0.5, 0.75]), label="ratio"),
                   criterion=draw(st.sampled_from(CRITERIA), label="criterion"),
                   global_rank=draw(st.booleans(), label="global_rank"),
                   round_to=draw(st.sampled_from([1, 2, 4]), label="round_to"),
                   compensate=draw(st.sampled_from(["merge", "none"]), label="compensate"))
        STATS["prunes"] += 1
        what = "prune(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"
        try:
            pruned, _, _ = prune(model, **cfg)
        except OnnxPruneError as exc:
            MESSAGES[_normalise(str(exc))] += 1
            if any(s in str(exc) for s in NOT_LEGITIMATE):
                raise FuzzFailure("invalid model written", f"{what}: OnnxPruneError: {exc}", model) from None
            continue
        except Exception as exc:  # noqa: BLE001
            raise _internal(what, exc, model) from exc
        STATS["prunes_written"] += 1
        _valid(pruned, x, want, what, model)


def check_merge_property(model: onnx.ModelProto, draw) -> None:
    _generated(model)
    analysis = _analyze(model)
    groups = [g for g in analysis.prunable if g.channels >= 2
              and any(m.role == "producer" and m.kind == "weight" for m in g.members)]
    STATS["merge_graphs"] += 1
    if not groups:
        return
    g = draw(st.sampled_from(groups), label="group")
    n = draw(st.integers(0, g.channels - 1), label="n")
    m = draw(st.integers(0, g.channels - 2), label="m")
    m += m >= n
    kind = draw(st.sampled_from(["multiple", "multiple", "constant"]), label="kind")
    scale = draw(st.sampled_from([1.7, 0.6, 1.0, -0.8]), label="scale")
    equalize = draw(st.booleans(), label="equalize")
    others = [c for c in range(g.channels) if c not in (n, m)]
    second = draw(st.sampled_from([None, *others]), label="second removed channel") if others else None
    order = draw(st.sampled_from(["original", "sequential"]), label="merge_order")
    what = f"group {g.id}: channel {n} {'= %s x channel %d' % (scale, m) if kind == 'multiple' else 'constant'}" \
           f"{' (equalized on the way)' if equalize and kind == 'multiple' else ''}" \
           f"{'' if second is None else f', and channel {second} the same with scale 0.9'}, merge_order={order}"
    try:
        variant = oracle.merge_variant(model, g.id, n, m, scale, kind, equalize)
        if variant is not None and second is not None:
            variant = oracle.merge_variant(variant, g.id, second, m, 0.9, kind, equalize, constant=-0.4)
    except Exception as exc:  # noqa: BLE001 - the oracle's own preparation goes through analyze
        raise _internal(f"merge variant ({what})", exc, model) from exc
    if variant is None:
        STATS["merge_skipped"] += 1
        return
    STATS["merge_checks"] += 1
    removed = [n] if second is None else sorted([n, second])
    try:
        result = oracle.check_merge_exact(variant, g.id, removed, into=m if kind == "multiple" else None,
                                          merge_order=order)
    except AssertionError as exc:
        ops = sorted({f"{mb.op_type}:{mb.role}" for mb in g.members})
        raise FuzzFailure("merge claimed exact but wrong", f"{what}: {str(exc)[:600]}", variant,
                          {"group_ops": ops, "merge_kind": kind, "equalize": equalize, "scale": scale}) from None
    except OnnxPruneError as exc:
        _plan_refusal(exc, f"merge prune ({what})", variant)
        return
    except Exception as exc:  # noqa: BLE001
        raise _internal(f"merge prune ({what})", exc, variant) from exc
    STATS["merge_claimed_exact"] += result["claimed"]
    STATS["merge_verified_exact"] += result["claimed"] and result["error"] is not None


def _run(check, model, data) -> None:
    try:
        check(model, data.draw)
    except FuzzFailure as failure:
        _report(failure, model)


# -- hypothesis tests ----------------------------------------------------------------------------
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("onnxprune-ci", deadline=None, derandomize=True, database=None,
                          suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("onnxprune-long", deadline=None, derandomize=False,
                          suppress_health_check=_HEALTH, print_blob=True)
_BASE = settings.get_profile(f"onnxprune-{PROFILE}")


@settings(_BASE, max_examples=EXAMPLES["analyze"])
@given(data=st.data())
def test_fuzz_analyze_and_dead_channels(data) -> None:
    _run(check_dead_channel_property, data.draw(random_graphs.cnn_models(), label="model"), data)


@settings(_BASE, max_examples=EXAMPLES["prune"])
@given(data=st.data())
def test_fuzz_ratio_prunes(data) -> None:
    _run(check_ratio_prune_property, data.draw(random_graphs.cnn_models(), label="model"), data)


@settings(_BASE, max_examples=EXAMPLES["merge"])
@given(data=st.data())
def test_fuzz_merge_exactness(data) -> None:
    _run(check_merge_property, data.draw(random_graphs.cnn_models(), label="model"), data)


def test_fuzz_summary(tmp_path_factory, capsys) -> None:
    """Not a property: prints and writes the counts of the fuzz tests that ran before it."""
    path = Path(os.environ.get("ONNXPRUNE_FUZZ_STATS") or tmp_path_factory.getbasetemp() / "fuzz_stats.json")
    summary = {"profile": PROFILE, **dict(STATS), "refusals": dict(MESSAGES.most_common())}
    path.write_text(json.dumps(summary, indent=1) + "\n")
    line = (f"fuzz ({PROFILE}): {STATS['graphs']} graphs, {STATS['groups']} groups "
            f"({STATS['prunable_groups']} prunable), {STATS['dead_channel_checks']} dead-channel checks, "
            f"{STATS['prunes']} ratio prunes ({STATS['prunes_written']} written), {STATS['merge_checks']} merge "
            f"checks ({STATS['merge_claimed_exact']} claimed exact), {STATS['failures']} failures; {path}")
    with capsys.disabled():
        print(f"\n{line}")


# =================================================================================================
# Regression tests: minimal graphs for failures the fuzz found. Plain pytest functions, built with
# tests/handmade.py; each comment says what it guards.
# =================================================================================================
def _merge_claims_hold(model: onnx.ModelProto, gid: str, n: int, m: int | None, scale: float = 1.7,
                       kind: str = "multiple", equalize: bool = False) -> dict:
    """Make channel n of `gid` a multiple of m (or a constant), prune it alone with merging, and assert
    the outputs are unchanged wherever the report claims the compensation exact."""
    variant = oracle.merge_variant(model, gid, n, m if m is not None else (n + 1) % 2, scale, kind, equalize)
    assert variant is not None
    return oracle.check_merge_exact(variant, gid, n, into=m if kind == "multiple" else None)


@pytest.mark.parametrize("between", ["bn", "add_const"])
def test_regression_merge_offset_through_relu(between: str) -> None:
    """Guards: an offset B != 0 in a_n = K a_m + B reaching a Relu. relu(K a + B) != K relu(a) + c, so
    the merge is not exact, yet the activation rule drops B and the report counts a merge.
    conv1 (filter 5 = 1.7 x filter 2) -> BatchNormalization (or Add of a per-channel constant) -> Relu -> 1x1 conv."""
    b = handmade.Builder(0)
    h = b.conv("x", 3, 8)
    if between == "bn":
        h = b.bn(h, 8)
    else:
        h = b.op("Add", [h, b.small([1, 8, 1, 1], "add1.shift")], name="add1")
    b.conv(b.relu(h), 8, 5, 1, out="y")
    _merge_claims_hold(b.model("offset_relu", handmade.X2D_SMALL), "conv1", 5, 2)


@pytest.mark.parametrize("kind", ["multiple", "constant"])
def test_regression_merge_offset_into_conv_transpose(kind: str) -> None:
    """Guards: a constant offset (a BN residual, or a constant channel) folded into the bias of a
    ConvTranspose consumer. A stride-2 kernel-2 ConvTranspose spreads one input pixel over a 2x2 block
    with a different weight per tap, so a constant input gives a position-dependent output, not a bias.
    conv1 -> BatchNormalization -> ConvTranspose(k2, s2, no pads) -> y."""
    b = handmade.Builder(1)
    h = b.bn(b.conv("x", 3, 8), 8)
    w = b.randn([8, 4, 2, 2], 32, "convt1.weight")
    b.op("ConvTranspose", [h, w, b.small([4], "convt1.bias")], out="y", name="convt1", kernel_shape=[2, 2],
         strides=[2, 2])
    _merge_claims_hold(b.model("bn_convtranspose", handmade.X2D_SMALL), "conv1", 5, 2 if kind == "multiple" else None,
                       kind=kind)


def test_regression_merge_through_nonzero_constant_pad() -> None:
    """Guards: Pad(mode=constant, value 0.5) on the way. The padded border is 0.5 in both channels, not
    K x 0.5, so a_n = K a_m breaks on the border; the merge is reported without any border note.
    conv1 (filter 5 = 1.7 x filter 2) -> Pad(1, value 0.5) -> 3x3 conv without padding -> y."""
    b = handmade.Builder(2)
    h = b.conv("x", 3, 8)
    h = b.op("Pad", [h, b.ints([0, 0, 1, 1, 0, 0, 1, 1]), b.scalar(0.5)], mode="constant")
    name = b.fresh("conv")
    b.op("Conv", [h, b.randn([5, 8, 3, 3], 72, f"{name}.weight"), b.small([5], f"{name}.bias")], out="y",
         name=name, kernel_shape=[3, 3])
    _merge_claims_hold(b.model("pad_nonzero", handmade.X2D_SMALL), "conv1", 5, 2)


def test_regression_merge_into_weight_shared_with_another_conv() -> None:
    """Guards: the consumer's weight initializer is shared with a second Conv. Merging adds n's input
    slice to m's in that tensor, which changes the other Conv too (and removing channel n slices it).
    conv1 (8) -> conv2(W) -> Relu -> conv3(W) -> 1x1 head, W one 8x8x1x1 initializer."""
    b = handmade.Builder(3)
    h = b.conv("x", 3, 8)
    w = b.randn([8, 8, 1, 1], 8, "shared.weight")
    h = b.op("Conv", [h, w, b.small([8], "conv2.bias")], name=b.fresh("conv"), kernel_shape=[1, 1])
    h = b.op("Conv", [b.relu(h), w, b.small([8], "conv3.bias")], name=b.fresh("conv"), kernel_shape=[1, 1])
    b.conv(b.relu(h), 8, 4, 1, out="y")
    _merge_claims_hold(b.model("shared_consumer_weight", handmade.X2D_SMALL), "conv1", 5, 2)


@pytest.mark.parametrize("n, m", [(5, 1), (1, 5)])
def test_regression_merge_split_relu_on_one_part_concat(n: int, m: int) -> None:
    """Guards: a Split whose parts take different ops before a Concat. Channel n and its match m sit in
    different parts, one through a Relu and one not, so a_n = K a_m no longer holds at the consumer.
    conv1 (8) -> Split [4, 4] -> Relu on part 0 only -> Concat -> 1x1 conv -> y."""
    b = handmade.Builder(4)
    h = b.conv("x", 3, 8)
    p, q = b.op_multi("Split", [h, b.ints([4, 4])], 2, axis=1)
    cat = b.op("Concat", [b.relu(p), q], axis=1)
    b.conv(cat, 8, 5, 1, out="y")
    _merge_claims_hold(b.model("split_relu_concat", handmade.X2D_SMALL), "conv1", n, m)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_regression_merge_offset_through_padded_average_pool(count_include_pad: int) -> None:
    """Guards: a BN residual (a_n = K a_m + B, B != 0) through AveragePool(k3, pads 1). With
    count_include_pad=1 the border windows average B with padding zeros, so B does not pass as a constant.
    conv1 (filter 5 = 0.6 x filter 2) -> BatchNormalization -> AveragePool -> 1x1 conv -> y."""
    b = handmade.Builder(5)
    h = b.bn(b.conv("x", 3, 8), 8)
    h = b.op("AveragePool", [h], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=count_include_pad)
    b.conv(h, 8, 5, 1, out="y")
    _merge_claims_hold(b.model("bn_avgpool", handmade.X2D_SMALL), "conv1", 5, 2, scale=0.6)


def test_regression_merge_channel_read_only_by_a_conv_inside_its_group_is_not_folded() -> None:
    """Guards (fails today): a channel that some producers of its group do not produce, consumed only by
    a Conv that is itself a producer of the same group. conv1's channels 0..1 go (through a Split) only
    into conv2, whose outputs are concatenated with conv1's channels 2..5 and tied to conv3 by an Add.
    For channel 0, conv2 and conv3 have no filter row; the rows read as zero filters, channel 0 is taken
    for a constant and reported "folded, exact" -- but conv2, its only real consumer, is treated as a
    producer and gets no compensation, so the output changes (max error ~1.2 on scale 3.6).
    (Found by the fuzz as Split -> Conv on one part -> Concat -> squeeze-excitation Mul.)
    conv1 (6) -> Split [2, 4] -> Concat(conv2(part 0) (2->4), part 1) -> Add(conv3(x) (8)) -> 1x1 head -> y."""
    b = handmade.Builder(6)
    h = b.conv("x", 3, 6, 1, bias=False)
    p, q = b.op_multi("Split", [h, b.ints([2, 4])], 2, axis=1)
    cat = b.op("Concat", [b.conv(p, 2, 4, 1, bias=False), q], axis=1)
    b.conv(b.op("Add", [cat, b.conv("x", 3, 8, 1, bias=False)]), 8, 3, 1, out="y")
    model = b.model("split_conv_concat_add", handmade.X2D_SMALL)
    for n in (0, 1):
        oracle.check_merge_exact(model, "conv1", n)


def test_regression_merge_channel_repeated_with_different_bn_parameters() -> None:
    """Guards (found by the long fuzz): a channel concatenated twice meets a different BN scale on each
    copy, so there is no one relation for it; merging averaged the copies' parameters and claimed exact
    (max error 2.8e-2 on scale 0.58). conv1 (1->4) -> Relu -> Concat(h, conv2(h)) -> Concat(self, self)
    -> BatchNormalization -> 1x1 head."""
    b = handmade.Builder(9)
    h = b.relu(b.conv("x", 1, 4, 1, bias=False))
    cat = b.op("Concat", [h, b.conv(h, 4, 4, 1, bias=False)], axis=1)
    b.head(b.bn(b.op("Concat", [cat, cat], axis=1), 16), 16, 3)
    model = b.model("repeated_channel_bn", [1, 1, 8, 8], opset=11)
    _merge_claims_hold(model, "conv1", 0, 1)
    _merge_claims_hold(model, "conv1", 0, 1, equalize=True)
