"""Depth against width at about the same MACs, measured: writes docs/depth.md.

    python tools/depth_table.py [--models vit,resnet,bert,yolo] [--out docs/depth.md] [--json depth.json]
    python tools/depth_table.py --from-json depth.json      # re-render the page from a saved run
    python tools/depth_table.py --from-json all.json,resnet.json   # runs of some models merged (later ones win)

Per model, through the Python API (what `onnxprune prune` runs): the N least important residual blocks removed
(depth, --drop-blocks N; its MAC share is the target of the others), channels removed to the same share (width,
--target-macs), fewer blocks then channels to the same share (both, --drop-blocks K --target-macs), and --depth's
measured choice; each plain and recovered (--recover, block-wise distillation: few samples, few epochs). Kept
channel counts are multiples of 8 (the CLI's default on CPU). Fidelity against the original on held-out inputs;
latency timed interleaved with the original and with the original again (the A/A control: the timing's own noise).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T, Y, X, F = (ROOT / "models" / d for d in ("transformers_trained", "yolo", "transformers", "fashion"))
RECOVER = dict(samples=64, epochs=3, batch=16)  # short: 2 busy cores (YOLO's: fewer, see cases)
TIME_BUDGET = 4.0  # seconds of timing per model and batch
ORDER = ("vit", "resnet", "bert", "yolo")  # the models, in the page's order


def cases(tmp: Path) -> dict[str, dict]:
    """Per model: the file, its calibration and held-out inputs, the blocks of the depth row, the batches timed."""
    rng = np.random.default_rng(0)
    tokens = {f"{name}.npz": {"input_ids": rng.integers(0, 500, (n, 16)), "attention_mask": np.ones((n, 16), np.int64)}
              for name, n in (("bert_calib", 64), ("bert_eval", 128))}
    images = {f"yolo_{name}.npz": {"images": rng.uniform(0, 1, (n, 3, 160, 160)).astype(np.float32)}
              for name, n in (("calib", 64), ("eval", 32))}
    for name, arrays in {**tokens, **images}.items():
        np.savez(tmp / name, **arrays)
    return {
        "vit": dict(title="trained ViT (models/transformers_trained/vit_fashion.onnx, Fashion-MNIST)",
                    model=T / "vit_fashion.onnx", calib=T / "fashion_calib256.npz", data=T / "fashion_test500.npz",
                    labels=T / "fashion_test500_labels.npy", points=((2, 1), (3, 1)), shapes=None, batches=(1, 32),
                    held_out="the 500 shipped test images, labelled (accuracy) and against the original (top-1)"),
        "resnet": dict(title="trained ResNet (models/fashion/resnet_small.onnx, Fashion-MNIST)",
                       model=F / "resnet_small.onnx", calib=F / "calib256.npz", data=F / "test500.npz",
                       labels=F / "test500_labels.npy", points=((2, 1), (3, 1)), shapes=None, batches=(1, 32),
                       held_out="the 500 shipped test images (models/fashion/test500.npz), labelled (accuracy) and "
                                "against the original (top-1); calibration on models/fashion/calib256.npz"),
        "bert": dict(title="BERT export (models/transformers/bert_ts.onnx: 2 layers, random weights)",
                     model=X / "bert_ts.onnx", calib=tmp / "bert_calib.npz", data=tmp / "bert_eval.npz", labels=None,
                     points=((1, 1),), shapes={"input_ids": (1, 16), "attention_mask": (1, 16)}, batches=(1, 32),
                     held_out="128 random token sequences of 16 (seed 0; 64 others calibrate)"),
        "yolo": dict(title="YOLOv8n (models/yolo/yolov8n_w0.0625_nc10_160_ul.onnx: reduced width, random weights)",
                     model=Y / "yolov8n_w0.0625_nc10_160_ul.onnx", calib=tmp / "yolo_calib.npz",
                     data=tmp / "yolo_eval.npz", labels=None, points=((4, 2),), shapes=None, batches=(1,),
                     recover=dict(samples=32, epochs=2, batch=16), blocks={"output0": (4, 10)},
                     held_out="32 uniform-noise images (seed 0; 64 others calibrate); fidelity is the relative L2 "
                              "error and cosine of the class scores (output0's rows 4..13)"),
    }


def fidelity(original: Path, pruned: onnx.ModelProto, case: dict) -> dict:
    """Accuracy (with labels), top-1 agreement and the worst output's cosine on the held-out inputs."""
    from onnxprune.validation.tasks import TaskOptions
    from onnxprune.validation.validate import Inputs, validate

    labels = str(case["labels"]) if case["labels"] else None
    tasks = TaskOptions(blocks=case.get("blocks", {}))
    report = validate(str(original), pruned.SerializeToString(), Inputs(data=str(case["data"]), labels=labels),
                      tasks=tasks)
    outs = report["outputs"].values()
    parts = [f for o in outs for f in o.get("blocks", {}).values()]  # YOLO: the class scores, not the boxes
    figures = parts[-1:] or list(outs)
    got = {"cosine": min(f["cosine"] for f in figures), "rel_l2": max(f["rel_l2"] for f in figures)}
    top1 = [o["top1_agreement"] for o in outs if "top1_agreement" in o]
    if top1:
        got["top1"] = min(top1)
    if "accuracy" in report:
        got["accuracy"], got["accuracy_before"] = report["accuracy"]["pruned"], report["accuracy"]["original"]
    return got


def latency(original: Path, pruned: onnx.ModelProto, case: dict) -> dict:
    """Per batch: the speed-up and the A/A control's range, timed as every prune's speed line is (quick_speedup:
    the original, the original again and the result interleaved in rounds, the fastest run of each round)."""
    from onnxprune.validation.speed_check import quick_speedup

    out = {}
    for batch in case["batches"]:
        got = quick_speedup(str(original), pruned.SerializeToString(), batch=batch, shapes=case["shapes"],
                            budget_s=TIME_BUDGET)
        out[str(batch)] = {k: got[k] for k in ("speedup", "range", "control", "original_ms", "pruned_ms", "runs")}
    return out


def variants(case: dict, n: int, k: int, progress) -> dict[str, tuple[onnx.ModelProto, dict] | str]:
    """depth (n blocks), width, both (k blocks, then channels) and --depth's choice at the depth row's MAC share:
    (model, report) each, or the one-line error of a variant that cannot reach it."""
    import onnxprune
    from onnxprune.errors import OnnxPruneError

    common = dict(calibration=str(case["calib"]), input_shapes=case["shapes"])
    depth = onnxprune.drop_blocks(str(case["model"]), n, **common)
    share = round(depth[2]["total"]["macs_removed"], 4)
    progress(f"  depth: {n} blocks, {share:.1%} of MACs")
    out: dict = {"depth": (depth[0], depth[2])}
    wide = dict(target_macs=share, round_to=8, **common)
    for name, extra in (("width", {}), ("both", {"drop_blocks": k}), ("--depth", {"depth": True})):
        try:
            model, _, report = onnxprune.prune(str(case["model"]), **wide, **extra)
        except OnnxPruneError as exc:
            out[name] = str(exc)
            progress(f"  {name}: {exc}")
            continue
        out[name] = (model, report)
        progress(f"  {name}: {report['total']['macs_removed']:.1%} of MACs")
    return out


def recovered(case: dict, model: onnx.ModelProto) -> onnx.ModelProto:
    """The result distilled from the original on a few calibration samples (short: see RECOVER)."""
    import onnxprune
    from onnxprune.calibration import Calibration

    settings = dict(case.get("recover", RECOVER))
    calibration = Calibration(case["calib"], settings.pop("samples"))
    return onnxprune.recover(str(case["model"]), model, calibration, **settings)[0]


def measure(case: dict, n: int, k: int, progress) -> dict:
    """Every variant at one depth: MACs, parameters, blocks, fidelity plain and recovered, latency."""
    start = time.perf_counter()
    rows = {}
    for variant, got in variants(case, n, k, progress).items():
        if isinstance(got, str):
            rows[variant] = {"error": got}
            continue
        model, report = got
        t = report["total"]
        row = {"blocks": len(report.get("blocks_removed") or []), "channels": t["channels_removed"],
               "macs_removed": t["macs_removed"], "params_removed": t["params_removed"],
               "plain": fidelity(case["model"], model, case), "latency": latency(case["model"], model, case)}
        if report.get("depth_choice"):
            choice = report["depth_choice"]
            row["candidates"] = [{k: c[k] for k in ("blocks", "loss", "macs_removed", "error", "blocks_alone")
                                  if k in c} for c in choice["candidates"]]
            row["choice_metric"] = choice["loss"]
        progress(f"  {variant}: recovering")
        row["recovered"] = fidelity(case["model"], recovered(case, model), case)
        rows[variant] = row
        progress(f"  {variant}: {row['plain']} -> {row['recovered']}; {row['latency']}")
    return {"title": case["title"], "held_out": case["held_out"], "rows": rows, "blocks": n, "both": k,
            "seconds": round(time.perf_counter() - start, 1), "target": rows["depth"]["macs_removed"]}


def fashion_blocks() -> dict[str, int]:
    """Residual blocks in the trained Fashion-MNIST models (none in the plain chains)."""
    from onnxprune.analysis.residual import find_blocks

    return {p.name: len(find_blocks(p)) for p in sorted(F.glob("*.onnx"))}


# --- the page ---------------------------------------------------------------------------------------------------

def _fid(f: dict) -> str:
    """The fidelity cell: accuracy (top-1 agreement), else top-1 agreement, then the worst cosine."""
    if "accuracy" in f:
        return f"{f['accuracy']:.1%} (top-1 {f['top1']:.1%})"
    if "top1" in f:
        return f"top-1 {f['top1']:.1%}, cos {f['cosine']:.3f}"
    return f"rel L2 {f['rel_l2']:.2e}, cos {f['cosine']:.4f}"


def _blocks(n: int) -> str:
    """'1 block', '3 blocks'."""
    return f"{n} block" + ("" if n == 1 else "s")


def _speed(t: dict) -> str:
    """A speed-up cell: the median over rounds, and the A/A control's range."""
    low, high = t["control"]
    return f"{t['speedup']:.2f}x (A/A {low:.2f}-{high:.2f}x)"


def _score(f: dict) -> float:
    """What 'closer to the original' compares (higher is closer): accuracy, else top-1 agreement, else -rel L2."""
    return f.get("accuracy", f.get("top1", -f["rel_l2"]))


def table(result: dict) -> list[str]:
    """One operating point's rows, then --depth's candidates."""
    batches = list(result["rows"]["depth"]["latency"])
    lines = ["| variant | blocks removed | channels removed | MACs removed | params removed | fidelity | recovered | "
             + " | ".join(f"speed-up, batch {b}" for b in batches) + " |",
             "|---|---:|---:|---:|---:|---|---|" + "---:|" * len(batches)]
    for name, r in result["rows"].items():
        label = f"`{name}`" if name.startswith("--") else name
        if "error" in r:
            lines.append(f"| {label} | | | | | cannot: {r['error']} | |" + " |" * len(batches))
            continue
        speed = " | ".join(_speed(r["latency"][b]) for b in batches)
        lines.append(f"| {label} | {r['blocks']} | {r['channels']} | {r['macs_removed']:.1%} | "
                     f"{r['params_removed']:.1%} | {_fid(r['plain'])} | {_fid(r['recovered'])} | {speed} |")
    chosen = result["rows"].get("--depth", {})
    if "candidates" in chosen:
        lines += ["", f"`--depth` candidates ({chosen['choice_metric']} on the calibration inputs): " + "; ".join(
            _blocks(c["blocks"]) + (" alone" if c.get("blocks_alone") else " + channels") + ": "
            + (f"failed ({c['error']})" if c.get("error") else f"{c['loss']:.4f}")
            for c in chosen["candidates"]) + f"; kept {_blocks(chosen['blocks'])}."]
    return lines


def _faster(d: dict, w: dict) -> str:
    """'depth' or 'width' when its range of speed-ups lies wholly above the other's, else 'neither'."""
    if d["range"][0] > w["range"][1]:
        return "depth"
    return "width" if w["range"][0] > d["range"][1] else "neither"


def _closer(d: dict, w: dict) -> str:
    """'depth', 'width' or 'neither': which result is closer to the original (see _score)."""
    return "depth" if _score(d) > _score(w) else "width" if _score(w) > _score(d) else "neither"


def _compare(rows: dict) -> list[str]:
    """Depth against width on one point, in words: fidelity plain and recovered, speed per batch."""
    depth, width = rows["depth"], rows["width"]
    if "error" in width:
        return [f"width cannot reach that share ({width['error']}); depth can"]
    out = [f"{stage}, {_closer(depth[stage], width[stage])} is closer to the original ({_fid(depth[stage])} for "
           f"depth, {_fid(width[stage])} for width)" for stage in ("plain", "recovered")]
    for b in depth["latency"]:
        d, w = depth["latency"][b], width["latency"][b]
        faster = _faster(d, w)
        out.append(f"at batch {b} " + (f"{faster} runs faster" if faster != "neither" else "the speed-ups overlap")
                   + f" ({d['speedup']:.2f}x, {d['range'][0]:.2f}-{d['range'][1]:.2f}x over the rounds, against "
                   f"{w['speedup']:.2f}x, {w['range'][0]:.2f}-{w['range'][1]:.2f}x)")
    return out


def reading(results: dict) -> list[str]:
    """What each point says, in sentences made from the figures."""
    return [f"- **{key}**, {r['target']:.1%} of MACs: " + "; ".join(_compare(r["rows"])) + "."
            for key, r in results.items()]


def verdict(results: dict) -> list[str]:
    """Where depth did better than width, and where not, counted over the points measured."""
    fid: dict[str, list[str]] = {"depth": [], "width": [], "neither": []}
    speed: dict[str, list[str]] = {"depth": [], "width": [], "neither": []}
    for key, r in results.items():
        d, w = r["rows"]["depth"], r["rows"]["width"]
        if "error" in w:
            fid["depth"].append(f"{key} (width cannot reach it)")
            continue
        for stage in ("plain", "recovered"):
            fid[_closer(d[stage], w[stage])].append(f"{key} {stage}")
        for b in d["latency"]:
            speed[_faster(d["latency"][b], w["latency"][b])].append(f"{key} at batch {b}")
    said = lambda xs: "; ".join(xs) or "none"  # noqa: E731
    return [f"- Faster at the same MACs (ranges over the timing rounds apart): depth in {said(speed['depth'])}; "
            f"width in {said(speed['width'])}; too close to tell in {said(speed['neither'])}.",
            f"- Closer to the original at the same MACs: depth in {said(fid['depth'])}; width in {said(fid['width'])}"
            f"; equal in {said(fid['neither'])}.",
            "- Why the speed differs: removing a block removes its ops (convolutions or MatMuls, Softmax, "
            "normalisation, the copies between them), while narrowing keeps every op and makes each smaller, so the "
            "same MAC share buys more time where a model's latency is per-op cost rather than arithmetic.",
            "- Fidelity depends on the model: on a trained one the importance ranking finds the blocks whose removal "
            "costs least, and the rows above say whether that beats narrowing at the same share; random-weight "
            "exports have no trained redundancy, so their fidelity rows show only that each path runs.",
            "- `--depth` kept: " + "; ".join(_kept(key, r["rows"]) for key, r in results.items()) + ".",
            *_twins(results), *_recovery_lost(results)]


def _same(x: dict, y: dict) -> bool:
    """Two rows that hold the same model (`--depth` chose that fixed mix)."""
    return all(x[k] == y[k] for k in ("blocks", "channels", "macs_removed", "plain"))


def _recovery_lost(results: dict) -> list[str]:
    """Where the recovered result came out further from the original than the plain one, and what its output
    error did meanwhile (fell: the distillation fit the outputs on average, not their ranking)."""
    lost, fell = [], 0
    for key, r in results.items():
        rows = {n: v for n, v in r["rows"].items() if "error" not in v}
        for name, row in rows.items():
            twin = name == "--depth" and any(_same(row, rows[n]) for n in rows if n != name)
            if twin or _score(row["recovered"]) >= _score(row["plain"]):
                continue
            p, q = row["plain"], row["recovered"]
            fell += q["rel_l2"] < p["rel_l2"]
            lost.append(f"{key} {name}: {_fid(p)} -> {_fid(q)}, rel L2 {p['rel_l2']:.2f} -> {q['rel_l2']:.2f}")
    if not lost:
        return []
    return [f"- Recovery (short: {RECOVER['samples']} calibration samples, {RECOVER['epochs']} epochs) left the "
            "result further from the original than the plain prune in: " + "; ".join(lost) + f". In {fell} of "
            f"{len(lost)} the outputs' relative L2 error fell all the same: the distillation fit the outputs on "
            "average but moved their ranking, on few samples; more of them (`--calib-samples`) is the first thing "
            "to try there."]


def _twins(results: dict) -> list[str]:
    """Where two rows hold the same model, how far apart their timings came: the noise no control shows."""
    said = []
    for key, r in results.items():
        rows = {n: v for n, v in r["rows"].items() if "error" not in v}
        for a, b in (("both", "--depth"), ("depth", "--depth"), ("width", "--depth")):
            x, y = rows.get(a), rows.get(b)
            if x and y and _same(x, y):
                said += [f"{key} at batch {n}: {x['latency'][n]['speedup']:.2f}x and {y['latency'][n]['speedup']:.2f}x"
                         for n in x["latency"]]
                break
    if not said:
        return []
    return ["- Where two rows hold the same model (`--depth` chose a fixed mix), their two timings differ by what "
            "the machine's load does between runs: " + "; ".join(said) + ". Speed-ups closer than that are noise."]


def _kept(key: str, rows: dict) -> str:
    """What --depth chose on one point, and how its held-out fidelity compares with depth's and width's."""
    chosen = rows.get("--depth", {})
    if "error" in chosen or not chosen:
        return f"{key}: failed"
    others = {n: _score(rows[n]["plain"]) for n in ("depth", "width", "both") if "plain" in rows.get(n, {})}
    best = max(others, key=others.get)
    rank = "as close as" if _score(chosen["plain"]) >= others[best] else "less close than"
    alone = next((c.get("blocks_alone") for c in chosen.get("candidates", []) if c["blocks"] == chosen["blocks"]),
                 False)
    what = _blocks(chosen["blocks"]) + (" alone" if alone else " + channels")
    return f"{key}: {what}, {rank} the best fixed mix ({best}) on held-out inputs"


def _fashion(blocks: dict[str, int]) -> list[str]:
    """The section on models/fashion/: which models are plain chains, which have blocks (measured above)."""
    if not blocks:
        return []
    plain = [k for k, v in blocks.items() if not v]
    text = ("The trained models in `models/fashion/` (" + ", ".join(f"{k}: {blocks[k]} residual blocks" for k in plain)
            + ") are plain chains: depth pruning has nothing to remove there, and `--depth` on such a model is the "
            "width prune, byte for byte (tests/test_depth_width.py).")
    residual = [f"{k} ({v} residual blocks)" for k, v in blocks.items() if v]
    if residual:
        text += " " + ", ".join(residual) + " has blocks: it is the trained ResNet measured above."
    return ["## Fashion-MNIST CNNs", "", text, ""]


def merge(runs: list[dict]) -> tuple[dict, dict]:
    """Saved runs of some models each, as one: a later run's points replace an earlier's, in the page's order;
    the minutes add up, the dates and commands listed, the models/fashion/ census is the latest run's."""
    results: dict = {}
    for run in runs:
        results.update(run["results"])
    ordered = sorted(results, key=lambda key: ORDER.index(key.split(" ")[0]) if key.split(" ")[0] in ORDER else 99)
    metas = [run["meta"] for run in runs]
    meta = {**metas[-1], "seconds": sum(m["seconds"] for m in metas),
            "when": ", ".join(dict.fromkeys(m["when"] for m in metas)),
            "commands": [_command(run) for run in runs]}
    return {key: results[key] for key in ordered}, meta


def _command(run: dict) -> str:
    """The command of a saved run (runs saved before it was recorded: the models in it named)."""
    models = ",".join(dict.fromkeys(key.split(" ")[0] for key in run["results"]))
    return run["meta"].get("command", f"python tools/depth_table.py --models {models}")


def _made_by(meta: dict) -> str:
    """The page's first line: the command(s), date(s), time and machine."""
    commands = meta.get("commands") or [meta.get("command", "python tools/depth_table.py")]
    runs = " and ".join(f"`{c}`" for c in commands)
    return (f"Made by {runs} ({meta['when']}; {meta['seconds'] / 60:.1f} minutes"
            + (f" in {len(commands)} runs" if len(commands) > 1 else "")
            + f" on {meta['cpus']} CPU cores shared with other work; onnxruntime {meta['onnxruntime']})")


def render(results: dict, meta: dict) -> str:
    """docs/depth.md."""
    parts = ["# Depth against width, measured", "",
             _made_by(meta) + "; `--json FILE` saves the figures and `--from-json FILE[,FILE...]` re-renders this "
             "page from them (runs of some models merged). Back to the [depth guide](guide/depth.md).", "",
             "Each model is pruned four ways to about the same MAC share, through the Python API (what "
             "`onnxprune prune` runs):", "",
             "- **depth**: the N least important residual blocks removed (`--drop-blocks N`, importance measured on "
             "the calibration inputs); its MAC share is the target of the other rows;",
             "- **width**: channels only, `--target-macs` at that share (criterion l1, merging, kept counts multiples "
             "of 8 as the CLI does on CPU);",
             "- **both**: fewer blocks (`--drop-blocks K --target-macs`), then channels of what is left to the share;",
             "- **`--depth`**: k = 0, 1, 2... blocks, each completed to the share by channels, the least loss on the "
             "calibration inputs kept (its candidates under each table).", "",
             f"**fidelity** compares the result with the original on held-out inputs; **recovered** is the same result "
             f"after `--recover` (block-wise distillation on {RECOVER['samples']} calibration samples, "
             f"{RECOVER['epochs']} epochs per block; YOLO 32 samples, 2 epochs: kept short for 2 cores). **speed-up** "
             "is the original's latency over the result's at that batch, timed as the speed line of every prune is "
             f"(about {TIME_BUDGET:g} s per model and batch: the original, the original again and the result "
             "interleaved in rounds, the fastest run of each round, the median ratio over the rounds); beside it the "
             "A/A control's range, the original over itself: the timing's own noise. Recovery changes weights only, "
             "so the recovered models run as the plain ones do (not timed again).", ""]
    titles: dict[str, list[str]] = {}
    for key, r in results.items():
        titles.setdefault(r["title"], []).append(key)
    for title, keys in titles.items():
        parts += [f"## {title}", "", f"Held-out inputs: {results[keys[0]]['held_out']}.", ""]
        for key in keys:
            r = results[key]
            parts += [f"### {_blocks(r['blocks'])}: {r['target']:.1%} of MACs ({r['seconds']:.0f} s)", "",
                      *table(r), ""]
    parts += _fashion(meta.get("fashion_blocks", {}))
    parts += ["## Reading", "", "Made from the figures above by the tool:", "", *reading(results), "",
              "## When depth beats width", "", "Counted over the points above:", "", *verdict(results), ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ORDER))
    ap.add_argument("--out", default=str(ROOT / "docs" / "depth.md"))
    ap.add_argument("--json", help="also save the measurements here")
    ap.add_argument("--from-json", help="render the page from saved measurements, comma-separated files merged "
                    "(a later file's points win); measure nothing")
    args = ap.parse_args()
    if args.from_json:
        results, meta = merge([json.loads(Path(f).read_text()) for f in args.from_json.split(",")])
        Path(args.out).write_text(render(results, meta))
        print(f"wrote {args.out}")
        return
    import onnxruntime

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        table_ = cases(Path(tmp))
        for name in args.models.split(","):
            for n, k in table_[name]["points"]:
                progress(f"{name}, {n} blocks:")
                results[f"{name} ({_blocks(n)})"] = measure(table_[name], n, k, progress)
    meta = {"when": time.strftime("%Y-%m-%d"), "seconds": time.perf_counter() - start, "cpus": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__, "machine": platform.machine(), "fashion_blocks": fashion_blocks(),
            "command": "python tools/depth_table.py" + ("" if args.models == ",".join(ORDER) else
                                                         f" --models {args.models}")}
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "meta": meta}, indent=1) + "\n")
    Path(args.out).write_text(render(results, meta))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
