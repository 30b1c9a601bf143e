"""Fetch the third-party trained models the tests use: PP-OCR det/rec/cls from the rapidocr wheel.

    python tools/fetch_models.py

Downloads `rapidocr-onnxruntime==1.4.4` (Apache-2.0) with `pip download --no-deps`, checks the
models' sha256 and unpacks them into models/third_party/rapidocr/ (ignored by git).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "rapidocr-onnxruntime==1.4.4"
DEST = Path(__file__).resolve().parent.parent / "models" / "third_party" / "rapidocr"
MODELS = {
    "ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def present() -> bool:
    return all((DEST / name).is_file() and _sha(DEST / name) == sha for name, sha in MODELS.items())


def fetch() -> None:
    """Download the wheel and unpack the three models, verifying each."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        DEST.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name, sha in MODELS.items():
                data = zf.read(f"rapidocr_onnxruntime/models/{name}")
                if hashlib.sha256(data).hexdigest() != sha:
                    raise SystemExit(f"{name}: sha256 mismatch")
                (DEST / name).write_bytes(data)


if __name__ == "__main__":
    if not present():
        fetch()
    print(f"PP-OCR models in {DEST}")
