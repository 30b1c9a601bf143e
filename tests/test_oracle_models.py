"""Dead-channel oracle on real exporter output and real trained third-party networks.

Every prunable group of each model is pruned at once, with several channel subsets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import oracle
from conftest import cli, OCR_MODELS, ROOT, ocr_model
from onnxprune import analyze
from onnxprune.analysis.estimates import prunable_macs_share

TORCHVISION = sorted((ROOT / "models" / "torchvision").glob("*.onnx"))
# Architectures whose channels nearly all stay prunable; a rule regression would show up here.
MOSTLY_PRUNABLE = ("resnet", "mobilenet", "vgg", "densenet", "efficientnet", "regnet", "squeezenet")
# The others freeze by design, and only for these reasons.
EXPECTED_FREEZES = {
    "convnext": ("LayerNormalization", "can drop only whole groups", "may carry channels nobody slices",
                 "Gather 'node_as_strided' picks along the channel axis", "reaches graph output"),  # dynamo's as_strided
    "shufflenet": ("splits or reorders the channel axis", "Concat", "can drop only whole groups",
                   "reaches graph output"),
}


def _oracle(model: onnx.ModelProto, subset: str, shapes=None) -> None:
    analysis = analyze(model, shapes)
    rng = np.random.default_rng(3)
    removed = {g.id: oracle.subsets(g.channels, rng)[subset] for g in analysis.prunable}
    assert removed
    oracle.check_dead_channels(model, removed, shapes=shapes)


def test_torchvision_exports_present() -> None:
    assert len(TORCHVISION) >= 40, "models/torchvision is incomplete: see tools/export_torchvision_models.py"


def _frozen(path: Path):
    """(analysis, every freeze reason of its groups)."""
    analysis = analyze(path)
    return analysis, [r for g in analysis.groups if not g.prunable for r in g.reasons]


@pytest.mark.parametrize("path", TORCHVISION, ids=[p.stem for p in TORCHVISION])
def test_torchvision_coverage(path: Path) -> None:
    analysis, frozen = _frozen(path)
    if path.stem.startswith(MOSTLY_PRUNABLE):
        assert prunable_macs_share(analysis) > 0.9
        assert frozen == [f"reaches graph output '{onnx.load(path).graph.output[0].name}'"]
    else:
        allowed = next(v for k, v in EXPECTED_FREEZES.items() if path.stem.startswith(k))
        assert len(analysis.prunable) >= 5 and prunable_macs_share(analysis) > 0.5
        assert all(any(a in r for a in allowed) for r in frozen), frozen


@pytest.mark.parametrize("subset", ["first", "random", "all_but_one"])
@pytest.mark.parametrize("name", list(OCR_MODELS))
def test_pp_ocr(name: str, subset: str) -> None:
    _oracle(onnx.load(ocr_model(name)), subset, OCR_MODELS[name])


def test_pp_ocr_rec_freezes_only_what_mixes_channels() -> None:
    name = "ch_PP-OCRv4_rec_infer.onnx"
    analysis = analyze(ocr_model(name), OCR_MODELS[name])
    reasons = " ".join(g.reason for g in analysis.groups if not g.prunable)
    assert len(analysis.prunable) >= 20
    assert "reduces over the channel axis" in reasons and "Softmax" in reasons
    assert "unknown rank" not in reasons and "not traceable" not in reasons


EXPORTS = sorted((ROOT / "models" / "yolo").glob("*.onnx")) + sorted((ROOT / "models" / "keras").glob("*.onnx"))
# What may still freeze in them, and why (docs/coverage.md): the class/box heads that reach the output,
# YOLO's DFL (a Reshape that splits the box channels into 4 x 16 bins, then Softmax over the bins),
# YOLO11's C2PSA attention (heads split by a Reshape, the MatMul of two activations, its depthwise
# positional conv), the class scores concatenated into the output, and Keras' softmax classifier.
EXPORT_FREEZES = ("reaches graph output", "Softmax", "splits or reorders the channel axis",
                  "is not an activation times a constant matrix", "Concat", "may carry channels nobody slices",
                  "can drop only whole groups",
                  "expects channels on axis 1")  # YOLO's DFL: the box bins split off in units, then read by a conv


def test_yolo_and_keras_exports_present() -> None:
    names = " ".join(p.name for p in EXPORTS)
    assert all(k in names for k in ("yolov8n", "yolo11n", "mobilenet_v2", "efficientnet_b0", "conv1d")), names


CASES = [(p, s) for p in TORCHVISION for s in ("random", "last", "all_but_one")] + \
    [(p, s) for p in EXPORTS for s in ("random", "all_but_one")]


@pytest.mark.parametrize("path, subset", CASES, ids=[f"{p.stem}-{s}" for p, s in CASES])
def test_exports(path: Path, subset: str) -> None:
    """Torchvision, YOLO and Keras exports: every prunable group at once."""
    _oracle(onnx.load(path), subset)


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_yolo_and_keras_coverage(path: Path) -> None:
    analysis, frozen = _frozen(path)
    assert prunable_macs_share(analysis) > 0.9 and len(analysis.prunable) >= 0.8 * len(analysis.groups)
    assert all(any(a in r for a in EXPORT_FREEZES) for r in frozen), frozen


@pytest.mark.parametrize("ratio", ["0.3", "0.5"])
@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_yolo_and_keras_prune_and_validate(path: Path, ratio: str, tmp: Path) -> None:
    import json
    out, report = tmp / "pruned.onnx", tmp / "report.json"
    r = cli("prune", str(path), "-o", str(out), "--ratio", ratio, "--round-to", "8", "--validate", "--runs", "3",
            "--warmup", "1", "--report", str(report))
    assert r.returncode == 0, r.stderr
    total = json.loads(report.read_text())["total"]
    assert total["macs_removed"] > 0.15
    onnx.checker.check_model(onnx.load(out), full_check=True)
