"""python tools/quantized_table.py [--out docs/quantized.md] [--macs 0.3] [--models NAME,NAME] [--json FILE]
python tools/quantized_table.py --from-json FILE [--out docs/quantized.md]   (re-render, nothing measured)

Quantized models pruned by onnxprune, against the float model pruned the same way.

For each model (trained Fashion VGG and ViT with their test labels, the trained MiniLM sentence embedder where
models/third_party/minilm is present, ResNet-18, YOLOv8n and BERT exports with random weights on random inputs):

1. quantize it with onnxruntime's static quantizer, QDQ and QOperator (int8 weights per channel, uint8
   activations) on 32 calibration samples, with its dynamic int8 quantizer, and with its MatMulNBitsQuantizer (4 bits, blocks of 32);
2. `onnxprune prune --target-macs 0.3` (l1, defaults, the prune's own speed line) the float model (F -> Fp) and
   each quantized copy (Q -> Qp); quantize Fp the same way (FpQ: pruned then quantized);
3. compare each with the float original F on held-out samples: output cosine (mean over samples), top-1
   agreement (classifiers) or 10-nearest-neighbour agreement (the embedder), accuracy where labels exist; and
   Qp against FpQ (the two orders);
4. the dead-channel oracle on Q: a random ~40 % of every prunable group's channels made dead (integer weights
   at the zero point), pruned: the largest output difference (0 means bit-identical outputs).

Commands run through the `onnxprune` command line in subprocesses; the written page names the command.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import oracle  # noqa: E402  (the dead-channel oracle the tests use)
import quantized_models as qm  # noqa: E402
from onnxprune import analyze  # noqa: E402

logging.disable(logging.WARNING)  # the quantizer's advice to pre-process
MODELS = {
    "vgg": ("models/fashion/vgg_bnkeep.onnx", "models/fashion/test500.npz", "models/fashion/test500_labels.npy"),
    "vit": ("models/transformers_trained/vit_fashion.onnx", "models/transformers_trained/fashion_test500.npz",
            "models/transformers_trained/fashion_test500_labels.npy"),
    "minilm": ("models/third_party/minilm/minilm_l6_embed.onnx", "models/third_party/minilm/eval500.npz", None),
    "resnet18": ("models/torchvision/resnet18_ts_bnkeep.onnx", None, None),
    "yolov8n": ("models/yolo/yolov8n_w0.0625_nc10_160_ul.onnx", None, None),
    "bert": ("models/transformers/bert_ts.onnx", None, None),
}
CALIB, EVAL = 32, 200


def feeds(name: str, model: Path, data: str | None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(calibration feeds one sample each, a held-out batch dict)."""
    if data is None:
        calib = qm.random_inputs(model, CALIB, seed=1)
        held = qm.random_inputs(model, 64, seed=2)
        return calib, {k: np.concatenate([f[k] for f in held]) for k in held[0]}
    arrays = np.load(ROOT / data)
    calib = [{k: arrays[k][i:i + 1] for k in arrays.files} for i in range(CALIB)]
    return calib, {k: arrays[k][CALIB:CALIB + EVAL] for k in arrays.files}


def quantize(src: Path, dst: Path, calib: list[dict], qoperator: bool = False) -> Path:
    """Static int8, per channel, calibrated on `calib`: QDQ, or QOperator (QLinearConv, QLinearMatMul...)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    quantize_static(str(src), str(dst), qm._Reader(calib), quant_format=QuantFormat.QOperator if qoperator else
                    QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return dst


def run(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The first output on the batch, fed a sample at a time where the model's batch dim is fixed at 1."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fixed = any(i.shape and i.shape[0] == 1 for i in s.get_inputs())
    n = len(next(iter(batch.values())))
    if not fixed:
        return s.run(None, batch)[0]
    return np.concatenate([s.run(None, {k: v[i:i + 1] for k, v in batch.items()})[0] for i in range(n)])


def compare(a: np.ndarray, b: np.ndarray, embedding: bool) -> dict:
    """Mean per-sample cosine, and top-1 (or 10-neighbour) agreement of b with a."""
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = np.sum(a2 * b2, 1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1) + 1e-30)
    out = {"cosine": float(cos.mean())}
    if embedding:
        out["neighbours"] = _neighbours(a2, b2)
    elif a.ndim == 2:
        out["top1"] = float(np.mean(a.argmax(1) == b.argmax(1)))
    return out


def _neighbours(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    def knn(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1)[:, :k]
    na, nb = knn(a), knn(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


def prune(src: Path, dst: Path, macs: float) -> dict:
    """`onnxprune prune SRC --target-macs MACS` with its speed line: the report, or the one-line error."""
    report = dst.with_suffix(".json")
    r = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(src), "-o", str(dst), "--target-macs",
                        str(macs), "--report", str(report)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}",
                "exit": r.returncode}
    return json.loads(report.read_text())


def dead_oracle(path: Path) -> float:
    """Largest output difference after pruning a random ~40 % of every group's channels made dead."""
    model = onnx.load(path)
    a = analyze(model)
    rng = np.random.default_rng(3)
    removed = oracle.keep_parts(a, {g.id: oracle.subsets(g.channels, rng)["random"] for g in a.prunable})
    dead = oracle.dead_copy(model, removed)
    from onnxprune import apply_plan, make_plan
    pruned = apply_plan(dead, make_plan(analyze(dead), removed))
    x = oracle.random_feeds(dead, a.cost.input_dims)
    return max(float(np.abs(w - g).max()) for w, g in zip(oracle.run(dead, x), oracle.run(pruned, x)))


def measure(name: str, macs: float, work: Path) -> dict:
    """Every figure of one model's rows: QDQ and dynamic int8."""
    src, data, labels = MODELS[name]
    f = ROOT / src
    calib, held = feeds(name, f, data)
    fp = work / f"{name}_fp.onnx"
    rec = {"model": name, "source": src, "float_report": prune(f, fp, macs)}
    ref, fp_out = run(f, held), run(fp, held)
    y = np.load(ROOT / labels)[CALIB:CALIB + EVAL] if labels is not None else None
    makers = {"qdq": lambda s, d: quantize(s, d, calib), "qop": lambda s, d: quantize(s, d, calib, qoperator=True),
              "dynamic": qm.quantize_dyn, "nbits": qm.quantize_nbits}
    for kind, make in makers.items():
        q = make(f, work / f"{name}_{kind}.onnx")
        if kind == "nbits" and not qm.ops(q).get("MatMulNBits"):
            rec[kind] = {"report": {"error": "no MatMul for MatMulNBits here", "exit": None}}
            continue
        qp = work / f"{name}_{kind}_p.onnx"
        r = {"report": prune(q, qp, macs)}
        rec[kind] = r
        if "error" in r["report"]:
            continue
        fpq = make(fp, work / f"{name}_{kind}_fpq.onnx")
        outs = {"Q": run(q, held), "Fp": fp_out, "Qp": run(qp, held), "FpQ": run(fpq, held)}
        r["vs_float"] = {k: compare(ref, v, name == "minilm") for k, v in outs.items()}
        r["qp_vs_fpq"] = compare(outs["FpQ"], outs["Qp"], name == "minilm")
        if y is not None:
            r["accuracy"] = {k: float(np.mean(v.argmax(1) == y)) for k, v in {"F": ref, **outs}.items()}
        r["nodes"] = [_quant_nodes(q), _quant_nodes(qp)]
        r["oracle_max_diff"] = dead_oracle(q)
    return rec


def _quant_nodes(path: Path) -> int:
    ops = qm.ops(path)
    return sum(n for k, n in ops.items() if k in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                                  "ConvInteger", "MatMulInteger", "MatMulNBits", "QGemm")
               or k.startswith("QLinear"))


def _speed(report: dict) -> str:
    s = report.get("speed")
    if not s:
        return "-"
    return f"{s['speedup']:.2f}x" if "speedup" in s else "-"


def render(records: list[dict], macs: float, seconds: float) -> str:
    """The page."""
    lines = [
        "# Quantized models: pruned against the float model pruned the same way", "",
        f"Measured by `python tools/quantized_table.py` ({seconds / 60:.1f} min on this machine's 2 cores, "
        "shared). Each model is quantized with onnxruntime's `quantize_static` (QDQ and QOperator, int8 weights per "
        f"channel, uint8 activations, {CALIB} calibration samples), with its `quantize_dynamic` (dynamic int8: "
        "`ConvInteger`/`MatMulInteger`) and with its `MatMulNBitsQuantizer` (4-bit `MatMulNBits`), and pruned "
        f"by `onnxprune prune --target-macs {macs}` (l1, default "
        "rounding, default compensation). F: the float model; Q: its quantized copy; Fp / Qp: F / Q pruned; FpQ: "
        f"Fp quantized the same way (pruned, then quantized). Figures against F on {EVAL} held-out samples (64 "
        "random ones for the random-weight exports): mean output cosine, then top-1 agreement (classifiers) or "
        "10-nearest-neighbour agreement (MiniLM). Speed-up: the prune's own speed line (batch 1, "
        "CPUExecutionProvider, the pruned model against its own original). Oracle: a random ~40 % of every "
        "prunable group's channels made dead in Q, then pruned: the largest output difference.", ""]
    for kind, title in (("qdq", "QDQ (static, per channel)"), ("qop", "QOperator (static, per channel)"),
                        ("dynamic", "Dynamic int8"),
                        ("nbits", "MatMulNBits (4 bits, blocks of 32, asymmetric; MatMul weights only)")):
        lines += [f"## {title}", "",
                  "| model | MACs removed Fp / Qp | Q vs F | Fp vs F | Qp vs F | FpQ vs F | Qp vs FpQ "
                  "| accuracy F / Q / Qp / FpQ | quantization nodes Q -> Qp | speed-up Fp / Qp | oracle on Q |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in records:
            lines.append(_row(r, kind))
        lines.append("")
    return "\n".join(lines + reading(records))


def reading(records: list[dict]) -> list[str]:
    """What the figures say, computed from them (so a re-run cannot leave a stale sentence)."""
    done = [(r["model"], k, r[k]) for r in records for k in ("qdq", "qop", "dynamic", "nbits")
            if "vs_float" in r.get(k, {})]
    exact = [x for x in done if x[2]["oracle_max_diff"] == 0]
    slower = [f"{m} {k} {x['report']['speed']['speedup']:.2f}x" for m, k, x in done
              if x["report"].get("speed", {}).get("speedup", 1) < 1]
    broken = [f"{m} {k} (cosine {x['vs_float']['Q']['cosine']:.2f})" for m, k, x in done
              if x["vs_float"]["Q"]["cosine"] < 0.9]
    close = [x["qp_vs_fpq"]["cosine"] for _, _, x in done]
    worse = [f"{m} {k} ({x['accuracy']['Qp']:.1%} against {x['accuracy']['FpQ']:.1%})" for m, k, x in done
             if "accuracy" in x and x["accuracy"]["FpQ"] - x["accuracy"]["Qp"] > 0.02]
    lines = ["## Reading", "",
             f"- The dead-channel oracle gave bit-identical outputs on {len(exact)} of the {len(done)} quantized "
             "copies pruned: removing dead channels from a quantized model changes nothing, and every quantization "
             "node of the remaining layers stays (the node counts above).",
             f"- Quantized-then-pruned (Qp) against pruned-then-quantized (FpQ): output cosine {min(close):.4f} to "
             f"{max(close):.4f}. Where they differ, the pruning (the same criterion on the dequantized weights) chose "
             "other channels, or, for MatMulNBits, could only take input channels in whole blocks of 32."]
    if worse:
        lines.append("- Pruned-then-quantized kept clearly more accuracy for: " + "; ".join(worse) + ". With the float "
                     "model at hand, prune it, then quantize (docs/guide/formats.md).")
    if broken:
        lines.append("- Quantization alone loses these models (Q against F), before any pruning: " + "; ".join(broken)
                     + ": static uint8 activations throughout a transformer, with onnxruntime's default settings.")
    lines.append("- Quantized results that timed slower than their quantized original at batch 1: "
                 + ("; ".join(slower) if slower else "none") + " (the prune's speed line warns when outside the A/A "
                 "control's band).")
    return lines + [""]


def _row(r: dict, kind: str) -> str:
    fr, q = r["float_report"], r[kind]
    qr = q["report"]
    if "error" in qr:
        said = qr["error"] if qr.get("exit") is None else f"exit {qr['exit']}: {qr['error']}"
        return f"| {r['model']} | {said} |" + " |" * 9
    v, acc = q["vs_float"], q.get("accuracy")
    acc_s = " / ".join(f"{acc[k]:.1%}" for k in ("F", "Q", "Qp", "FpQ")) if acc else "-"
    return (f"| {r['model']} | {fr['total']['macs_removed']:.1%} / {qr['total']['macs_removed']:.1%} | "
            f"{_fig(v['Q'])} | {_fig(v['Fp'])} | {_fig(v['Qp'])} | {_fig(v['FpQ'])} | {_fig(q['qp_vs_fpq'])} | "
            f"{acc_s} | {q['nodes'][0]} -> {q['nodes'][1]} | {_speed(fr)} / {_speed(qr)} | "
            f"max diff {q['oracle_max_diff']:.1e} |")


def _fig(c: dict) -> str:
    extra = c.get("top1", c.get("neighbours"))
    return f"{c['cosine']:.4f}" + (f", {extra:.1%}" if extra is not None else "")


def main() -> int:
    """Measure, write the page."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    p.add_argument("--out", default=str(ROOT / "docs" / "quantized.md"))
    p.add_argument("--macs", type=float, default=0.3)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--json")
    p.add_argument("--from-json", help="render the page from a --json file of an earlier run")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        Path(args.out).write_text(render(saved["records"], saved["macs"], saved["seconds"]))
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    start, records = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if not (ROOT / MODELS[name][0]).is_file():
                print(f"skipping {name}: {MODELS[name][0]} is not here", file=sys.stderr)
                continue
            print(f"{name} ...", file=sys.stderr, flush=True)
            records.append(measure(name, args.macs, Path(tmp)))
    seconds = time.time() - start
    if args.json:
        saved = {"macs": args.macs, "seconds": seconds, "records": records}
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    Path(args.out).write_text(render(records, args.macs, seconds))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
