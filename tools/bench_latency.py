"""MAC reduction next to measured onnxruntime latency speed-up, per model, pruning ratio and channel rounding.

    python tools/bench_latency.py [--out docs/latency.md] [--runs 1000] [--quick]

Every pruned model comes from `onnxprune.prune` (criterion l1, the same ratio on every prunable group,
round_to 1 and 8, default compensation) and is timed against its original with
`onnxprune.validation.bench.bench` (runs interleaved, I/O binding, default thread count) at batch 1, and
at batch 8 where the batch dim is dynamic. CUDA rows are added when onnxruntime lists CUDAExecutionProvider.
PP-OCR models come from `python tools/fetch_models.py`; they are skipped with a note when absent.
--runs caps the timed runs per bench (PP-OCR models use fewer); each model is also timed against itself (A/A)
as a noise floor. --quick: ratio 0.5 only, at most 20 timed runs (a smoke test, too noisy for the page).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import onnx
import onnxruntime as ort

import onnxprune
from onnxprune.validation.bench import bench

RATIOS = (0.3, 0.5, 0.7)
ROUNDS = (1, 8)
TV = Path("models/torchvision")
OCR = Path("models/third_party/rapidocr")
# (path, shapes of dynamic inputs, cap on timed runs). PP-OCR input name and cls/rec sizes as in tools/coverage.py;
# det at 640x640, a typical deployment size, instead of the 128x128 the tests use for speed.
MODELS: list[tuple[Path, dict[str, tuple[int, ...]] | None, int | None]] = [
    (TV / "resnet18_ts_bnfold.onnx", None, None),
    (TV / "resnet50_ts_bnfold.onnx", None, None),
    (TV / "mobilenet_v2_ts_bnfold.onnx", None, None),
    (TV / "vgg11_bn_ts_bnfold.onnx", None, None),
    (Path("models/fashion/vgg_bnkeep.onnx"), None, None),
    (OCR / "ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}, 300),
    (OCR / "ch_PP-OCRv4_rec_infer.onnx", {"x": (1, 3, 48, 320)}, 40),
    (OCR / "ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 640, 640)}, 15),
]
CLOSE = 0.9  # speed-up / MAC reduction at or above this counts as "close to the MAC reduction"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def first_input(path: Path) -> onnx.ValueInfoProto:
    """The model's first graph input that is not an initializer."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return next(i for i in graph.input if i.name not in inits)


def dynamic_batch(path: Path) -> bool:
    """Whether the first input's first dim is symbolic (dim_param, or dim_value unset / 0 / -1)."""
    d = first_input(path).type.tensor_type.shape.dim[0]
    return bool(d.dim_param) or d.dim_value <= 0


def input_text(path: Path, shapes: dict | None) -> str:
    """'1x3x64x64': the shape the MACs are counted at."""
    if shapes:
        return "x".join(map(str, next(iter(shapes.values()))))
    return "x".join(str(d.dim_value or 1) for d in first_input(path).type.tensor_type.shape.dim)


def measure(path: Path, shapes: dict | None, cap: int | None, ratios: tuple[float, ...], runs: int,
            providers: list[str]) -> tuple[dict[str, float], list[dict]]:
    """The original against itself per 'provider bN' (a noise floor), then one row per (ratio, round_to)."""
    runs = min(runs, cap or runs)
    warmup = min(20, max(3, runs // 5))
    batches = (1, 8) if dynamic_batch(path) else (1,)
    aa = {f"{res['provider']} b{b}": e["speedup"] for res in
          (bench([str(path)] * 2, batches=batches, warmup=warmup, runs=runs, provider=p, shapes=shapes)
           for p in providers) for b, e in res["batches"].items()}
    rows = []
    for ratio in ratios:
        for round_to in ROUNDS:
            model, _, report = onnxprune.prune(path, ratio=ratio, criterion="l1", round_to=round_to,
                                               input_shapes=shapes)
            row = {"ratio": ratio, "round_to": round_to, **report["total"], "cells": {}}
            for provider in providers:
                res = bench([str(path), model.SerializeToString()], batches=batches, warmup=warmup, runs=runs,
                            provider=provider, shapes=shapes)
                row["threads"], row["warmup"], row["runs"] = res["threads"], warmup, runs
                for b, entry in res["batches"].items():
                    row["cells"][f"{res['provider']} b{b}"] = {
                        "speedup": entry["speedup"], "orig_ms": entry["models"][0]["median_ms"],
                        "pruned_ms": entry["models"][1]["median_ms"]}
            rows.append(row)
            print(f"  {path.name} ratio {ratio} round_to {round_to}: MACs -{row['macs_removed']:.1%}, "
                  + ", ".join(f"{k} {c['speedup']:.2f}x" for k, c in row["cells"].items()), flush=True)
    return aa, rows


def mac_factor(row: dict) -> float:
    """MACs before / MACs after."""
    return row["macs_before"] / max(row["macs_after"], 1)


def spread(values: list[float]) -> float:
    """max / min - 1 of repeated measurements."""
    return max(values) / min(values) - 1


def table(path: Path, shapes: dict | None, aa: dict[str, float], rows: list[dict]) -> list[str]:
    """The section of one model: sizes, the original's latency, one line per (ratio, round_to)."""
    keys = list(rows[0]["cells"])
    orig = {k: [r["cells"][k]["orig_ms"] for r in rows] for k in keys}
    base = ", ".join(f"{k} {statistics.median(v):.3f} ms (drift {spread(v):.0%} across its {len(v)} benches)"
                     for k, v in orig.items())
    r0 = rows[0]
    lines = [f"### `{path.name}`", "",
             f"Input {input_text(path, shapes)} ({'dynamic' if dynamic_batch(path) else 'static'} batch), "
             f"{r0['macs_before'] / 1e6:,.1f} M MACs, {r0['params_before']:,} params; {r0['warmup']} warm-up + "
             f"{r0['runs']} timed runs per bench. Original median latency: {base}. Original against itself (A/A): "
             + ", ".join(f"{k} {v:.2f}x" for k, v in aa.items()) + ".", "",
             "| ratio | round_to | MACs removed | params removed | MAC reduction | "
             + " | ".join(f"speed-up {k}" for k in keys) + " |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(keys)]
    for r in rows:
        f = mac_factor(r)
        cells = [f"{r['cells'][k]['speedup']:.2f}x ({r['cells'][k]['speedup'] / f:.2f})" for k in keys]
        lines.append(f"| {r['ratio']:.1f} | {r['round_to']} | {r['macs_removed']:.1%} | {r['params_removed']:.1%} | "
                     f"{f:.2f}x | " + " | ".join(cells) + " |")
    return lines + [""]


def observations(results: dict[str, list[dict]], aa: dict[str, dict[str, float]]) -> list[str]:
    """Counts and means computed from the measured rows, one bullet each; no conclusion is written in advance."""
    cells = [(name, r, k, r["cells"][k]["speedup"] / mac_factor(r)) for name, rows in results.items()
             for r in rows for k in r["cells"]]
    eff = [e for *_, e in cells]
    n = len(eff)
    out = [f"Over all {n} measured cells the median efficiency (speed-up / MAC reduction) is "
           + f"{statistics.median(eff):.2f}, range {min(eff):.2f} to {max(eff):.2f}; {sum(e >= CLOSE for e in eff)} "
           + f"of them reach {CLOSE} or more (speed-up close to the MAC reduction; above 1.00: "
           + f"{sum(e > 1 for e in eff)}), {sum(e < 0.5 for e in eff)} are below 0.50."]
    slower = [r["round_to"] for _, r, k, _ in cells if r["cells"][k]["speedup"] < 1]
    out.append(f"The pruned model was slower than the original (speed-up below 1) in {len(slower)} of {n} cells: "
               f"{slower.count(1)} with round_to=1, {slower.count(8)} with round_to=8.")
    per_model = sorted((statistics.mean(e for m, _, _, e in cells if m == name),
                        statistics.median(r["cells"][k]["orig_ms"] for r in rows for k in r["cells"]
                                          if k.endswith("b1")), name) for name, rows in results.items())
    out.append("Mean efficiency per model, worst first (original median batch-1 latency in brackets): "
               + "; ".join(f"`{name}` {e:.2f} ({ms:.2f} ms)" for e, ms, name in per_model) + ".")
    ratios = sorted({r["ratio"] for _, r, _, _ in cells})
    out.append("Mean efficiency per pruning ratio: " + ", ".join(
        f"{x:.1f}: {statistics.mean(e for _, r, _, e in cells if r['ratio'] == x):.2f}" for x in ratios) + ".")
    pairs = [(a, b, k) for rows in results.values() for a in rows for b in rows for k in a["cells"]
             if a["ratio"] == b["ratio"] and (a["round_to"], b["round_to"]) == (1, 8)]
    up = [b["cells"][k]["speedup"] / a["cells"][k]["speedup"] for a, b, k in pairs]
    better = sum(b["cells"][k]["speedup"] / mac_factor(b) > a["cells"][k]["speedup"] / mac_factor(a)
                 for a, b, k in pairs)
    more = sum(b["macs_removed"] > a["macs_removed"] for a, b, _ in pairs)
    fewer = sum(b["macs_removed"] < a["macs_removed"] for a, b, _ in pairs)
    out.append(f"round_to=8 against round_to=1 (same model, ratio, provider, batch; {len(pairs)} pairs): higher "
               f"speed-up in {sum(u > 1 for u in up)}, lower in {sum(u < 1 for u in up)} (mean change "
               f"{statistics.mean(up) - 1:+.0%}); higher efficiency in {better}. round_to=8 also removed more MACs in "
               f"{more} pairs and fewer in {fewer}, so its speed-up mixes rounding with a different amount removed.")
    b8 = [(r, k) for _, r, k, _ in cells if k.endswith(" b8")]
    if b8:
        e1 = [r["cells"][k[:-1] + "1"]["speedup"] / mac_factor(r) for r, k in b8]
        e8 = [r["cells"][k]["speedup"] / mac_factor(r) for r, k in b8]
        out.append(f"Dynamic-batch models, batch 8 against batch 1 ({len(b8)} pairs): mean efficiency "
                   f"{statistics.mean(e8):.2f} against {statistics.mean(e1):.2f}; batch 8 higher in "
                   f"{sum(a > b for a, b in zip(e8, e1))}.")
    floor = sorted((abs(v - 1), v, name, k) for name, d in aa.items() for k, v in d.items())
    drift = sorted((spread([r["cells"][k]["orig_ms"] for r in rows]), name, k)
                   for name, rows in results.items() for k in rows[0]["cells"])
    out.append(f"Noise: the original timed against itself (A/A, same settings) gave speed-ups from "
               f"{min(v for _, v, *_ in floor):.2f}x to {max(v for _, v, *_ in floor):.2f}x (furthest from 1: "
               f"`{floor[-1][2]}`, {floor[-1][3]}); treat speed-up differences below {floor[-1][0]:.0%} as noise. "
               f"Between benches, minutes apart, the original's median latency drifted by up to {drift[-1][0]:.0%} "
               f"(`{drift[-1][1]}`, {drift[-1][2]}; median {statistics.median(d for d, *_ in drift):.0%}); the "
               "interleaved runs keep that drift out of each speed-up, not out of comparisons between rows.")
    return ["## Observations (computed from the tables above)", ""] + [f"- {o}" for o in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/latency.md")
    ap.add_argument("--runs", type=int, default=1000, help="timed runs per bench (PP-OCR models use fewer)")
    ap.add_argument("--quick", action="store_true", help="ratio 0.5 only, at most 20 timed runs")
    args = ap.parse_args()
    start = time.perf_counter()
    ratios, runs = ((0.5,), min(args.runs, 20)) if args.quick else (RATIOS, args.runs)
    providers = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    results: dict[str, list[dict]] = {}
    aa: dict[str, dict[str, float]] = {}
    sections, notes = [], []
    for path, shapes, cap in MODELS:
        if not path.exists():
            notes.append(f"- `{path}` is absent (run `python tools/fetch_models.py`); skipped.")
            print(f"skipped {path}: absent (python tools/fetch_models.py)", flush=True)
            continue
        print(path, flush=True)
        aa[path.name], results[path.name] = measure(path, shapes, cap, ratios, runs, providers)
        sections += table(path, shapes, aa[path.name], results[path.name])
    ran = sorted({k.split()[0] for rows in results.values() for r in rows for k in r["cells"]})
    threads = next(iter(results.values()))[0]["threads"]
    gpu = ("CUDA rows are included (onnxruntime lists CUDAExecutionProvider)." if "cuda" in providers else
           "No GPU was available in this session (onnxruntime lists no CUDAExecutionProvider), so no CUDA figures "
           "are included; the script adds them when it runs where CUDA is available.")
    machine = (f"onnxruntime {ort.__version__}; CPU: {cpu_name()} ({platform.machine()}), {os.cpu_count()} cores "
               f"visible, {threads} intra-op threads (bench default: all available cores); provider that ran: "
               f"{', '.join(ran)}. {gpu}")
    method = ("Each model is pruned with `onnxprune.prune(path, ratio=r, criterion=\"l1\", round_to=1 or 8)` (default "
              "compensation; the same ratio on every prunable group; MACs counted at the input shape shown) and timed "
              "against its original with `onnxprune.validation.bench.bench`: both models in one process, runs "
              "interleaved, inputs bound once, random inputs. Speed-up = median latency of the original / median of "
              "the pruned model; MAC reduction = MACs before / MACs after. In brackets after each speed-up: speed-up / "
              "MAC reduction (1.00: latency fell as much as the MAC count). Batch 8 only where the batch dim is "
              "dynamic.")
    lines = ["# Latency speed-up against MAC reduction", "",
             f"Command: `python tools/bench_latency.py{''.join(' ' + a for a in sys.argv[1:])}`", "",
             machine, "", method, ""]
    lines += notes + ([""] if notes else [])
    lines += ["## Results", ""] + sections + observations(results, aa)
    lines += ["", f"The whole run took {(time.perf_counter() - start) / 60:.1f} min."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
