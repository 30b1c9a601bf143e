"""What recovery buys on trained models: the same prune with no compensation, with reconstruction, with recovery.

    python tools/export_minilm.py && python tools/fetch_models.py     # the third-party models, once
    python tools/recovery_table.py [--cases vgg3x,vit50,rec30,det2x,minilm30,minilm50] [--out docs/recovery.md]

Every row is `onnxprune prune` through the CLI, as a user runs it, timed whole by /usr/bin/time (wall and
peak resident memory of the process, 2 CPU cores here), then `onnxprune validate` against the original on
held-out inputs: accuracy (Fashion VGG at 3x fewer MACs, the trained ViT at 50 %), mask IoU and cosine
(PP-OCRv4 det at 2x on synthetic text pages), greedy-CTC sequence agreement (PP-OCRv4 rec at 30 %), the
share of each sentence's 10 nearest neighbours kept and the Spearman correlation of all pairwise
similarities (all-MiniLM-L6-v2 at 30 % and 50 %, sentences from Debian's fortunes).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
F, T = ROOT / "models" / "fashion", ROOT / "models" / "transformers_trained"
OCR, MINI = ROOT / "models" / "third_party" / "rapidocr", ROOT / "models" / "third_party" / "minilm"
RECOVER = ["--recover"]


def _ocr_data(tmp: Path) -> dict[str, Path]:
    """Synthetic text for PP-OCR: rec lines (64 calibration, 64 held out), det pages at 320 (64 and 16)."""
    from reconstruction_table import text_images

    out = {}
    for kind, size, n, m in (("rec", (320, 48), 64, 64), ("det", (320, 320), 64, 16)):
        for name, count, seed in (("calib", n, 0), ("eval", m, 1)):
            path = tmp / f"{kind}_{name}.npz"
            np.savez(path, x=text_images(kind, count, seed, size=size, marks=kind == "det"))
            out[f"{kind}_{name}"] = path
    return out


def cases(data: dict[str, Path]) -> dict[str, dict]:
    """Per case: the model, the prune, how to validate, and the variants compared."""
    fashion = ["--data", str(F / "test500.npz"), "--labels", str(F / "test500_labels.npy")]
    vit = ["--data", str(T / "fashion_test500.npz"), "--labels", str(T / "fashion_test500_labels.npy")]
    mini = ["--data", str(MINI / "eval500.npz")]
    mini_shape = ["--shape", "input_ids:1x64", "--shape", "attention_mask:1x64"]
    return {
        "vgg3x": dict(model=F / "vgg_bnkeep.onnx", prune=["--target-macs", "0.667"], calib=F / "calib256.npz",
                      validate=fashion, variants={"plain": [], "reconstruct": ["--reconstruct"], "recover": RECOVER,
                                                  "reconstruct + recover": ["--reconstruct", *RECOVER]}),
        "vit50": dict(model=T / "vit_fashion.onnx", prune=["--target-macs", "0.5", "--criterion", "l2"],
                      calib=T / "fashion_calib256.npz", validate=vit,
                      variants={"plain": [], "reconstruct": ["--reconstruct"], "recover": RECOVER,
                                "reconstruct + recover": ["--reconstruct", *RECOVER]}),
        "rec30": dict(model=OCR / "ch_PP-OCRv4_rec_infer.onnx", prune=["--target-macs", "0.3"],
                      calib=data["rec_calib"], validate=["--data", str(data["rec_eval"]), "--task", "sequence"],
                      variants={"plain": [], "reconstruct": ["--reconstruct"], "recover": RECOVER}),
        "det2x": dict(model=OCR / "ch_PP-OCRv4_det_infer.onnx",
                      prune=["--target-macs", "0.5", "--shape", "x:1x3x320x320"], calib=data["det_calib"],
                      validate=["--data", str(data["det_eval"]), "--task", "dense"],
                      variants={"plain": ["--criterion", "l1"], "lasso (reconstructs)": ["--criterion", "lasso"],
                                "lasso + recover": ["--criterion", "lasso", *RECOVER]}),
        "minilm30": dict(model=MINI / "minilm_l6_embed.onnx", prune=["--target-macs", "0.3", *mini_shape],
                         calib=MINI / "calib256.npz", validate=mini,
                         variants={"wanda": ["--criterion", "wanda"],
                                   "wanda + reconstruct": ["--criterion", "wanda", "--reconstruct"],
                                   "wanda + recover": ["--criterion", "wanda", *RECOVER],
                                   "wanda + reconstruct + recover": ["--criterion", "wanda", "--reconstruct",
                                                                     *RECOVER]}),
        "minilm50": dict(model=MINI / "minilm_l6_embed.onnx", prune=["--target-macs", "0.5", *mini_shape],
                         calib=MINI / "calib256.npz", validate=mini,
                         variants={"wanda + reconstruct": ["--criterion", "wanda", "--reconstruct"],
                                   "wanda + reconstruct + recover": ["--criterion", "wanda", "--reconstruct",
                                                                     *RECOVER]}),
    }


def timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run under /usr/bin/time -v: (the run, wall seconds, peak resident MiB)."""
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    seconds = (int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])) if wall else float("nan")
    return run, seconds, int(rss[1]) / 1024 if rss else float("nan")


def figures(report: dict) -> str:
    """The figures that matter for the case, from a validation report."""
    if "accuracy" in report:
        return f"accuracy {report['accuracy']['pruned']:.1%}"
    out = next(iter(report["outputs"].values()))
    if "neighbour_agreement" in out:
        return f"neighbours kept {out['neighbour_agreement']:.1%}, cosine {out['mean_cosine']:.4f}"
    if "iou" in out:
        return f"IoU {out['iou']:.1%}, cosine {out['cosine']:.4f}"
    if "sequence_agreement" in out:
        return f"same text {out['sequence_agreement']:.1%}, cosine {out['cosine']:.4f}"
    return f"cosine {out['cosine']:.4f}"


def spearman(original: Path, pruned: Path, data: Path) -> str:
    """Spearman of all pairwise cosine similarities of the embeddings (the ranking a search sees)."""
    import onnxruntime as ort
    from scipy.stats import spearmanr

    arrays = dict(np.load(data))
    sims = []
    for path in (original, pruned):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        e = np.concatenate([s.run(None, {k: v[i:i + 50] for k, v in arrays.items()})[0]
                            for i in range(0, len(arrays["input_ids"]), 50)])
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        sims.append((e @ e.T)[np.triu_indices(len(e), 1)])
    return f", Spearman {spearmanr(*sims).statistic:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="vgg3x,vit50,rec30,det2x,minilm30,minilm50")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = cases(_ocr_data(tmp))
        for name in args.cases.split(","):
            case = table[name]
            for variant, flags in case["variants"].items():
                out = tmp / "p.onnx"
                cmd = [sys.executable, "-m", "onnxprune", "prune", str(case["model"]), "-o", str(out), "-q",
                       "--no-verify", "--calib", str(case["calib"]), "--report", str(tmp / "r.json"),
                       *case["prune"], *flags]
                run, wall, rss = timed(cmd)
                if run.returncode:
                    rows.append(f"| {name} | {variant} | failed: {run.stderr.strip().splitlines()[-1][:100]} | | |")
                    print(rows[-1], flush=True)
                    continue
                report = json.loads((tmp / "r.json").read_text())
                extra = ""
                if "recovery" in report:
                    rec = report["recovery"]
                    kept = sum(b["kept"] == "recovered" for b in rec["blocks"])
                    extra = f"; {len(rec['blocks'])} blocks, {kept} recovered"
                subprocess.run([sys.executable, "-m", "onnxprune", "validate", str(case["model"]), str(out), "-q",
                                "--json", str(tmp / "v.json"), *case["validate"]], capture_output=True, text=True)
                got = figures(json.loads((tmp / "v.json").read_text()))
                if name.startswith("minilm"):
                    got += spearman(case["model"], out, MINI / "eval500.npz")
                rows.append(f"| {name} | {variant} | {got}{extra} | {wall:.0f} s | {rss:.0f} MiB |")
                print(rows[-1], flush=True)
    text = ["| case | compensation | fidelity on held-out inputs | wall | peak memory |", "|---|---|---|---:|---:|",
            *rows]
    print("\n".join(text))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
