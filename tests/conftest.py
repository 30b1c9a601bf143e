"""Shared fixtures: hand-built patterns, committed exports, third-party models fetched by .ci/run."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

THIRD_PARTY = ROOT / "models" / "third_party" / "rapidocr"
# PP-OCR models need their real input sizes (det: multiple of 32; rec: height 48)
OCR_MODELS = {
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": {"x": (1, 3, 48, 192)},
    "ch_PP-OCRv4_det_infer.onnx": {"x": (1, 3, 128, 128)},
    "ch_PP-OCRv4_rec_infer.onnx": {"x": (1, 3, 48, 320)},
}


def ocr_model(name: str) -> Path:
    """Path of a PP-OCR model; `python tools/fetch_models.py` (run by .ci/run) puts them there."""
    path = THIRD_PARTY / name
    if not path.is_file():
        pytest.fail(f"{path} missing: run `python tools/fetch_models.py` first (no network: see README)")
    return path


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def cli(*args: str, quiet: bool = True, **run) -> subprocess.CompletedProcess:
    """`onnxprune ARGS` in a subprocess; `quiet` adds -q after the command, so stderr holds only errors; a
    prune is not timed unless the test asks for it with --time-budget."""
    argv = [args[0], "-q", *args[1:]] if quiet and args and not args[0].startswith("-") else list(args)
    if argv and argv[0] == "prune" and "--time-budget" not in argv:
        argv.append("--no-time")  # prune's timing has its own tests (test_honest_speed.py); it costs seconds
    return subprocess.run([sys.executable, "-m", "onnxprune", *argv], capture_output=True, text=True, **run)


def sha(path: Path) -> str:
    """Content hash of a file (inputs must come out of every command unchanged)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
