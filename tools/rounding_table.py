"""python tools/rounding_table.py [--models GLOB[,GLOB]] [--out docs/rounding.md] [--ratio 0.3] [--runs 200]
    [--warmup 5] [--bench-budget 2.5] [--json FILE] [--no-snapshot]
python tools/rounding_table.py --from-json FILE [--out docs/rounding.md]

Channel rounding (--round-to 1 / the default 8 / 16) against measured speed-up, and the prune's own speed line.

For every .onnx model the globs match (default: every model under models/ except models/third_party), through
the `onnxprune` command line in subprocesses:

1. `onnxprune prune MODEL --ratio 0.3 -o TMP` with the defaults (default rounding, default timing): exit code,
   MACs removed, the printed `speed-up ...` line with its A/A control, and whether stderr carried the
   `onnxprune: warning: the pruned model runs SLOWER|no faster ...` warning. The property checked: no speed-up
   below 1 without that warning. The script exits 1 if it is violated for any model.
2. `onnxprune prune MODEL --ratio 0.3 --round-to 1 --no-time` and `--round-to 16 --no-time` (the two run side
   by side: nothing is timed in them).
3. `onnxprune bench ORIG ORIG` (A/A: the noise floor) and `onnxprune bench ORIG PRUNED` for each of the three
   results, at batch 1, and at batch 32 where the model's batch dim is dynamic; every bench of one model uses
   the same --warmup/--runs (fewer runs for slow models, so that one bench times for about --bench-budget s).

Inputs with dynamic dims other than the batch get an explicit --shape (the same for prune and bench): the
shapes tools/bench_latency.py times a model at where it lists one, else the package's own defaults (a dynamic
sequence dim 128, any other 224, as tools/coverage.py counts transformers), at batch 1.
Every command runs in a copy of onnxprune/ taken at the start (--no-snapshot: the live working tree), so that
edits made to the package during the run do not mix two versions; the page names the sources' hash.
Writes docs/rounding.md (--out) with the measurements; --json also keeps the raw records.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from bench_latency import MODELS as BENCH_MODELS, cpu_name, dynamic_batch  # noqa: E402

from onnxprune.graph.shapes import concrete_dims  # noqa: E402

ROUNDINGS = (1, 8, 16)  # 8: the default on CPU (the run with default flags)
DEFAULT_GLOBS = "models/**/*.onnx"
EXCLUDED = "models/third_party"
SLOWER = "onnxprune: warning: the pruned model runs "  # SLOWER, or no faster (inside the noise)
RUNS_WARNING = re.compile(r"onnxprune: warning: the pruned model runs (.+?) than the original")  # any wording
SPEED_LINE = re.compile(r"speed-up (?P<speedup>[\d.]+)x at batch (?P<batch>\d+) on (?P<provider>\S+) "
                        r"\(A/A control (?P<lo>[\d.]+)-(?P<hi>[\d.]+)x; (?P<orig_ms>[\d.]+) -> (?P<pruned_ms>[\d.]+) "
                        r"ms, (?P<runs>\d+) runs each in (?P<seconds>[\d.]+) s\)")


def known_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Model file name -> input shapes, as tools/bench_latency.py (and the PP-OCR tests) time them."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    try:  # the tests' PP-OCR sizes (models/third_party only, excluded by default)
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import OCR_MODELS
        shapes.update(OCR_MODELS)
    except Exception:  # noqa: BLE001 - pytest absent: bench_latency's list still holds the PP-OCR sizes
        pass
    shapes.update({p.name: s for p, s, _ in BENCH_MODELS if s})
    return shapes


def model_shapes(path: Path, known: dict) -> dict[str, tuple[int, ...]]:
    """The --shape values for this model: only inputs with a dynamic dim besides the batch, at batch 1."""
    if path.name in known:
        return dict(known[path.name])
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    specs = [(i.name, [d.dim_param or (d.dim_value if d.dim_value > 0 else None)
                       for d in i.type.tensor_type.shape.dim]) for i in graph.input if i.name not in inits]
    dims = concrete_dims(specs, 0, {})
    return {name: dims[name] for name, declared in specs
            if name in dims and any(not isinstance(d, int) for d in declared[1:])}


def shape_args(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    return [a for name, dims in shapes.items() for a in ("--shape", f"{name}:{'x'.join(map(str, dims))}")]


RUN_DIR = ROOT  # where `python -m onnxprune` runs: the repository, or a snapshot of its package (--snapshot)


def onnxprune(*args: str) -> list[str]:
    return [sys.executable, "-m", "onnxprune", *args]


def fingerprint(package: Path) -> str:
    """sha256 over the package's .py sources (paths and contents), first 12 hex digits."""
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def snapshot() -> Path:
    """Copy onnxprune/ to a temporary folder and run every command there (python -m puts the working directory
    first on sys.path), so that edits to the working tree during the run do not mix two versions."""
    global RUN_DIR
    RUN_DIR = Path(tempfile.mkdtemp(prefix="rounding_pkg_"))
    shutil.copytree(ROOT / "onnxprune", RUN_DIR / "onnxprune", ignore=shutil.ignore_patterns("__pycache__"))
    where = subprocess.run([sys.executable, "-c", "import onnxprune; print(onnxprune.__file__)"], cwd=RUN_DIR,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(RUN_DIR)):
        raise SystemExit(f"the snapshot is not the onnxprune imported ({where}); run with --no-snapshot")
    return RUN_DIR


def error_line(stderr: str) -> str:
    """The one-line error of a failed command: its `onnxprune: error` line, else its last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return next((ln for ln in lines if ln.startswith("onnxprune: error")), lines[-1] if lines else "(no message)")


def read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def prune_default(path: Path, shapes: dict, ratio: float, tmp: Path) -> dict:
    """Step 1: prune with the defaults; the speed line, the warning and the property."""
    out, report = tmp / "round8.onnx", tmp / "round8.json"
    cmd = onnxprune("prune", str(ROOT / path), "--ratio", str(ratio), "-o", str(out), "--report", str(report),
                    *shape_args(shapes))
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=RUN_DIR)
    rec = {"rc": p.returncode, "file": str(out) if p.returncode == 0 else None}
    if p.returncode != 0:
        rec["error"] = error_line(p.stderr)
        return rec
    rep = read_report(report)
    rec["macs_removed"] = rep.get("total", {}).get("macs_removed")
    rec["rounding"] = rep.get("rounding")
    rec["report_speed"] = rep.get("speed")
    lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip().startswith("speed-up ")]
    rec["speed_line"] = lines[0] if lines else None
    m = SPEED_LINE.search(p.stdout)
    rec["speed"] = {k: (float(v) if k not in ("provider",) else v) for k, v in m.groupdict().items()} if m else None
    rec["warned"] = SLOWER in p.stderr
    other = RUNS_WARNING.search(p.stderr)
    rec["warning_words"] = other.group(1) if other else None  # 'SLOWER', or another wording ('no faster')
    rec["noisy_warning"] = "onnxprune: warning: the timing is noisy" in p.stderr
    printed = rec["speed"]["speedup"] if rec["speed"] else None
    exact = (rec["report_speed"] or {}).get("speedup")
    below = [v for v in (printed, exact) if v is not None and v < 1]
    rec["below_1"] = bool(below)
    rec["violation"] = bool(below) and not rec["warned"]
    rec["unchecked"] = rec["speed"] is None  # exit 0 but no speed line: nothing to check
    return rec


def prune_rounded(path: Path, shapes: dict, ratio: float, tmp: Path) -> dict[int, dict]:
    """Step 2: --round-to 1 and 16 with --no-time, side by side (no timing runs in them)."""
    procs = {}
    for n in (1, 16):
        cmd = onnxprune("prune", str(ROOT / path), "--ratio", str(ratio), "--round-to", str(n), "--no-time", "-q",
                        "-o", str(tmp / f"round{n}.onnx"), "--report", str(tmp / f"round{n}.json"),
                        *shape_args(shapes))
        procs[n] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=RUN_DIR)
    out = {}
    for n, p in procs.items():
        _, err = p.communicate()
        rec = {"rc": p.returncode, "file": str(tmp / f"round{n}.onnx") if p.returncode == 0 else None}
        if p.returncode != 0:
            rec["error"] = error_line(err)
        else:
            rec["macs_removed"] = read_report(tmp / f"round{n}.json").get("total", {}).get("macs_removed")
        out[n] = rec
    return out


def bench(orig: Path, other: str, shapes: dict, batches: tuple[int, ...], warmup: int, runs: int,
          tmp: Path, tag: str) -> dict:
    """`onnxprune bench ORIG OTHER --batch ...`: speed-up and medians per batch, or the error."""
    js = tmp / f"bench_{tag}.json"
    cmd = onnxprune("bench", "-q", str(ROOT / orig), str(ROOT / other), "--batch", ",".join(map(str, batches)), "--warmup",
                    str(warmup), "--runs", str(runs), "--json", str(js), *shape_args(shapes))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=RUN_DIR)
    rec = {"rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if p.returncode != 0:
        rec["error"] = error_line(p.stderr)
        return rec
    rep = read_report(js)
    rec["threads"] = rep.get("threads")
    rec["provider"] = rep.get("provider")
    rec["batches"] = {int(b): {"speedup": e["speedup"], "orig_ms": e["models"][0]["median_ms"],
                               "other_ms": e["models"][1]["median_ms"], "shapes": e.get("shapes")}
                      for b, e in rep.get("batches", {}).items()}
    return rec


def timing_plan(default: dict, dynamic: bool, args) -> tuple[int, int]:
    """(warmup, runs) for every bench of one model: --runs, fewer where one bench would take over --bench-budget s.

    The estimate: the original's batch-1 time from the default prune's speed line (its fastest runs, so x 1.5 for
    the median under load), batch 32 taken as 60 times that (about what the first trials measured); both
    models, every batch timed. At least 20 runs."""
    ms1 = ((default.get("speed") or {}).get("orig_ms")) or ((default.get("report_speed") or {}).get("original_ms"))
    if not ms1:
        return args.warmup, min(args.runs, 20)
    per_run = 2 * 1.5 * ms1 * (1 + (60 if dynamic else 0))  # ms for one run of both models at every batch
    runs = int(min(args.runs, max(20, args.bench_budget * 1000 / per_run)))
    warmup = min(args.warmup, max(2, runs // 8))
    return warmup, runs


def measure(path: Path, known: dict, args) -> dict:
    shapes = model_shapes(path, known)
    dynamic = dynamic_batch(path)
    batches = (1, 32) if dynamic else (1,)
    tmp = Path(tempfile.mkdtemp(prefix="rounding_"))
    t0 = time.perf_counter()
    try:
        rec = {"model": str(path), "shapes": {k: list(v) for k, v in shapes.items()}, "dynamic_batch": dynamic,
               "prune": {}}
        rec["prune"][8] = prune_default(path, shapes, args.ratio, tmp)
        rec["prune_default_s"] = round(time.perf_counter() - t0, 1)
        rec["prune"].update(prune_rounded(path, shapes, args.ratio, tmp))
        rec["prunes_s"] = round(time.perf_counter() - t0, 1)
        warmup, runs = timing_plan(rec["prune"][8], dynamic, args)
        rec["warmup"], rec["runs"] = warmup, runs
        rec["bench"] = {"aa": bench(path, str(path), shapes, batches, warmup, runs, tmp, "aa")}
        seen: dict[bytes, int] = {}  # a result byte-identical to one benched already is not benched again
        for n in (8, 1, 16):
            f = rec["prune"][n].get("file")
            data = Path(f).read_bytes() if f else None
            if data is not None and data in seen:
                rec["bench"][n] = {**rec["bench"][seen[data]], "same_as": seen[data]}
            else:
                rec["bench"][n] = bench(path, f, shapes, batches, warmup, runs, tmp, str(n)) if f else None
                if data is not None:
                    seen[data] = n
        rec["bench"] = {k: rec["bench"][k] for k in ("aa", *ROUNDINGS)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    return rec


# ---------------------------------------------------------------- the page


def speedup(rec: dict, key, batch: int) -> float | None:
    b = (rec["bench"].get(key) or {}).get("batches", {}).get(batch)
    return b["speedup"] if b else None


FLOOR_QUANTILE = 0.9  # the floor under every model's band: this quantile of |1 - A/A| over all models


def noise_floors(records: list[dict]) -> dict[int, float]:
    """Per batch: the 90th percentile (nearest rank) of |1 - A/A speed-up| over all models."""
    out = {}
    for batch in (1, 32):
        devs = sorted(abs(1 - a) for r in records if (a := speedup(r, "aa", batch)) is not None)
        out[batch] = devs[max(0, math.ceil(FLOOR_QUANTILE * len(devs)) - 1)] if devs else 0.0
    return out


def band(rec: dict, batch: int, floors: dict[int, float]) -> float | None:
    """This model's noise band at this batch: max(|1 - its A/A bench|, the 90th percentile of that over all models)."""
    a = speedup(rec, "aa", batch)
    return None if a is None else max(abs(1 - a), floors[batch])


def slower(rec: dict, key, batch: int, floors: dict[int, float]) -> bool:
    s, b = speedup(rec, key, batch), band(rec, batch, floors)
    return s is not None and b is not None and s < 1 - b


def default_below_round1(rec: dict, batch: int, floors: dict[int, float]) -> bool:
    """Default rounding slower than --round-to 1 beyond noise: s8 / s1 < 1 - 2 x band (each may be off by a band)."""
    s1, s8, b = speedup(rec, 1, batch), speedup(rec, 8, batch), band(rec, batch, floors)
    return None not in (s1, s8, b) and s8 / s1 < 1 - 2 * b


def cell(rec: dict, key, batch: int, floors: dict[int, float]) -> str:
    if batch == 32 and not rec["dynamic_batch"]:
        return "n/a"
    p = rec["prune"].get(key) if key != "aa" else None
    if p is not None and p["rc"] != 0:
        return f"prune exit {p['rc']}"
    b = rec["bench"].get(key)
    if b is None or b.get("rc"):
        return f"bench exit {b['rc']}" if b else "-"
    s = speedup(rec, key, batch)
    if s is None:
        return "-"
    text = f"{s:.2f}"
    text = f"**{text}**" if key != "aa" and slower(rec, key, batch, floors) else text
    return text + (f" (= {b['same_as']})" if b.get("same_as") else "")


def macs_cell(rec: dict) -> str:
    return " / ".join(f"{p['macs_removed']:.1%}" if p.get("macs_removed") is not None else f"exit {p['rc']}"
                      for p in (rec["prune"][n] for n in ROUNDINGS))


def default_cell(rec: dict) -> tuple[str, str]:
    d = rec["prune"][8]
    if d["rc"] != 0:
        return f"exit {d['rc']}: {d.get('error', '').replace('|', '/')}", "-"
    s = d.get("speed")
    if not s:
        return "exit 0, no speed-up line", "yes" if d["warned"] else "no"
    line = f"{s['speedup']:.2f}x (A/A {s['lo']:.2f}-{s['hi']:.2f}x)"
    words = d.get("warning_words")
    warned = (words or "yes") if d["warned"] else (f"none (\"runs {words}\" instead)" if words else "none")
    if d["violation"]:
        warned += " **VIOLATION**"
    return line, warned


def family(rec: dict) -> str:
    parts = Path(rec["model"]).parts
    return parts[1] if len(parts) > 2 and parts[0] == "models" else str(Path(rec["model"]).parent)


def tables(records: list[dict], floors: dict[int, float]) -> list[str]:
    lines = []
    for fam in sorted({family(r) for r in records}):
        lines += [f"### {fam}", "",
                  "| model | MACs removed (1 / 8 / 16) | b1: 1 | b1: 8 | b1: 16 | b1 A/A | b32: 1 | b32: 8 | b32: 16 "
                  "| b32 A/A | runs | default prune's speed line | warning |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in (r for r in records if family(r) == fam):
            line, warned = default_cell(r)
            cells = [cell(r, k, b, floors) for b in (1, 32) for k in (*ROUNDINGS, "aa")]
            lines.append(f"| `{Path(r['model']).name}` | {macs_cell(r)} | " + " | ".join(cells)
                         + f" | {r['warmup']}+{r['runs']} | {line} | {warned} |")
        lines.append("")
    return lines


def failures(records: list[dict]) -> list[str]:
    out = []
    for r in records:
        for n in ROUNDINGS:
            p = r["prune"][n]
            if p["rc"] != 0:
                out.append(f"- `{r['model']}` --round-to {n if n != 8 else '(default 8)'}: exit {p['rc']}: "
                           f"`{p.get('error', '')}`")
        for k, b in r["bench"].items():
            if b and b.get("rc"):
                out.append(f"- `{r['model']}` bench ({'A/A' if k == 'aa' else f'round-to {k}'}): exit {b['rc']}: "
                           f"`{b.get('error', '')}`")
    return out


def macs(rec: dict, n: int) -> str:
    m = rec["prune"][n].get("macs_removed")
    return "?" if m is None else f"{m:.1%}"


def summary(records: list[dict], floors: dict[int, float]) -> list[str]:
    out = []
    for batch in (1, 32):
        timed = [r for r in records if speedup(r, "aa", batch) is not None]
        if not timed:
            continue
        parts = []
        for n in ROUNDINGS:
            have = [r for r in timed if speedup(r, n, batch) is not None]
            beyond = [r for r in have if slower(r, n, batch, floors)]
            raw = [r for r in have if speedup(r, n, batch) < 1]
            parts.append(f"round-to {n}{' (default)' if n == 8 else ''}: {len(beyond)} of {len(have)} "
                         f"(below 1.00 at all: {len(raw)})")
        out.append(f"Slower than the original beyond noise at batch {batch}: " + "; ".join(parts) + ".")
        names = {n: [Path(r["model"]).name for r in timed if slower(r, n, batch, floors)] for n in ROUNDINGS}
        for n in ROUNDINGS:
            if names[n]:
                out.append(f"Batch {batch}, round-to {n}, slower beyond noise: " + ", ".join(f"`{m}`" for m in names[n])
                           + ".")
        worse = [r for r in timed if default_below_round1(r, batch, floors)]
        raw = [r for r in timed if None not in (speedup(r, 1, batch), speedup(r, 8, batch))
               and speedup(r, 8, batch) < speedup(r, 1, batch)]
        pairs = [r for r in timed if None not in (speedup(r, 1, batch), speedup(r, 8, batch))]
        out.append(f"Batch {batch}: the default rounding (8) was slower than --round-to 1 beyond noise for "
                   f"{len(worse)} of {len(pairs)} models"
                   + (": " + ", ".join(f"`{Path(r['model']).name}` ({speedup(r, 8, batch):.2f}x against "
                                       f"{speedup(r, 1, batch):.2f}x; MACs removed {macs(r, 8)} against "
                                       f"{macs(r, 1)})" for r in worse) if worse else "")
                   + f" (lower at all: {len(raw)}).")
    for batch in (1, 32):
        devs = [abs(1 - a) for r in records if (a := speedup(r, "aa", batch)) is not None]
        if devs:
            out.append(f"Noise at batch {batch}: the A/A bench was off 1.00x by more than 5% for "
                       f"{sum(d > 0.05 for d in devs)} of {len(devs)} models, by more than 10% for "
                       f"{sum(d > 0.10 for d in devs)} (largest {max(devs):.1%}); the floor under every band "
                       f"(90th percentile) was {floors[batch]:.1%}.")
    both = [r for r in records if None not in (r["prune"][1].get("macs_removed"), r["prune"][8].get("macs_removed"))]
    diff = [r["prune"][8]["macs_removed"] - r["prune"][1]["macs_removed"] for r in both]
    out.append(f"MACs removed, the default rounding against --round-to 1 (both pruned: {len(both)} models): fewer in "
               f"{sum(d < -0.005 for d in diff)}, more in {sum(d > 0.005 for d in diff)}, within 0.5 points in "
               f"{sum(abs(d) <= 0.005 for d in diff)}"
               + (f" (median difference {statistics.median(diff) * 100:+.1f} points)" if diff else "")
               + ". So a speed-up difference between roundings mixes the kernel multiple with the amount removed.")
    pairs = [(r["prune"][8]["speed"]["speedup"], speedup(r, 8, 1)) for r in records
             if r["prune"][8].get("speed") and speedup(r, 8, 1) is not None]
    if pairs:
        gaps = [a / b - 1 for a, b in pairs]
        out.append(f"The default prune's printed speed-up against the bench's batch-1 speed-up of the same result "
                   f"({len(pairs)} models): printed / bench - 1 has median {statistics.median(gaps):+.1%}, range "
                   f"{min(gaps):+.1%} to {max(gaps):+.1%}; within 5% in {sum(abs(g) <= 0.05 for g in gaps)}.")
    slow = [r for r in records if slower(r, 8, 1, floors) and r["prune"][8].get("speed")]
    if slow:
        out.append(f"Of the {len(slow)} default results the bench found slower than the original beyond noise at "
                   f"batch 1, the prune itself printed a speed-up below 1 for "
                   f"{sum(r['prune'][8]['below_1'] for r in slow)} and a slow-down warning (any wording) for "
                   f"{sum(bool(r['prune'][8].get('warning_words')) for r in slow)}, the SLOWER one for "
                   f"{sum(r['prune'][8]['warned'] for r in slow)}.")
    ok = [r for r in records if r["prune"][8]["rc"] == 0]
    checked = [r for r in ok if not r["prune"][8]["unchecked"]]
    below = [r for r in checked if r["prune"][8]["below_1"]]
    warned = [r for r in below if r["prune"][8]["warned"]]
    viol = [r for r in checked if r["prune"][8]["violation"]]
    extra = [r for r in checked if r["prune"][8]["warned"] and not r["prune"][8]["below_1"]]
    unchecked = [r for r in ok if r["prune"][8]["unchecked"]]
    out.append(f"Property (no speed-up below 1 without a slow-down warning), default prune: {len(ok)} of "
               f"{len(records)} prunes exited 0, {len(checked)} printed a speed-up line; {len(below)} printed a "
               f"speed-up below 1, {len(warned)} of them with the warning; violations: {len(viol)}"
               + (" (" + ", ".join(f"`{Path(r['model']).name}`" for r in viol) + ")" if viol else "")
               + "".join(f"; {sum(r['prune'][8].get('warning_words') == w for r in viol)} of them printed "
                         f"\"the pruned model runs {w} than the original\" instead"
                         for w in sorted({r["prune"][8].get("warning_words") for r in viol} - {None}))
               + f". Warning with a speed-up of 1 or more: {len(extra)}."
               + (f" Exit 0 without a speed-up line (not checkable): "
                  + ", ".join(f"`{Path(r['model']).name}`" for r in unchecked) + "." if unchecked else ""))
    return [f"- {o}" for o in out]


def environment() -> dict:
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {"date": date, "onnxruntime": ort.__version__, "cpu": cpu_name(), "cores": os.cpu_count(),
            "head": head.stdout.strip() or "unknown", "package": fingerprint(RUN_DIR / "onnxprune"),
            "snapshot": RUN_DIR != ROOT}


def page(records: list[dict], env: dict, args, argv: list[str], wall_s: float, done: bool) -> str:
    floors = noise_floors(records)
    threads = next((b["threads"] for r in records for b in r["bench"].values() if b and b.get("threads")), None)
    provider = next((b["provider"] for r in records for b in r["bench"].values() if b and b.get("provider")), None)
    shaped = [r for r in records if r["shapes"]]
    lines = [
        "# Channel rounding and measured speed-up", "",
        f"Command: `{shlex.join(['python', 'tools/rounding_table.py', *argv])}`" + ("" if done else
                                                                                        " (partial: still running)"),
        "",
        f"Date: {env['date']}. onnxruntime {env['onnxruntime']}; CPU: {env['cpu']}, {env['cores']} cores; bench "
        f"provider {provider}, {threads} intra-op threads (the default). Other jobs shared the machine, so the "
        f"timings are noisy; the A/A columns show how noisy. {len(records)} models, {wall_s / 60:.1f} min in all.",
        "",
        f"Package: onnxprune at git {env['head']} plus the working tree's uncommitted changes, sources sha256 "
        f"{env['package']} (first 12 digits, over onnxprune/**/*.py)"
        + ("; every command ran in a copy of onnxprune/ taken when the run started, so edits made during the run "
           "are not in these figures" if env["snapshot"] else "; commands ran on the live working tree")
        + (f"; the working tree's sources changed during the run (now {env['live_after']})"
           if env.get("live_after") and env["live_after"] != env["package"] else "") + ".",
        "",
        "## What was measured", "",
        f"For every model, through the `onnxprune` command line (each command a subprocess):", "",
        f"1. `onnxprune prune MODEL --ratio {args.ratio:g} -o TMP` with the defaults: rounding to the provider's "
        "kernel multiple (8 on CPU) and the ~3 s timing after writing. Recorded: exit code, MACs removed, the "
        "printed `speed-up ...x at batch 1 ... (A/A control LO-HIx)` line, and which warning stderr carried: "
        f"`{SLOWER}SLOWER than the original ...`, `{SLOWER}no faster than the original (... inside the "
        "timing's own noise ...)`, or none.",
        "2. The same with `--round-to 1 --no-time` and with `--round-to 16 --no-time`.",
        "3. `onnxprune bench ORIG ORIG` (A/A) and `onnxprune bench ORIG PRUNED` for each of the three results, "
        "`--batch 1,32` where the model's batch dim is dynamic, else `--batch 1` (batch 32: n/a). Every bench of one "
        "model uses the same `--warmup W --runs N` (column runs: W+N; at most "
        f"{args.warmup}+{args.runs}, fewer runs for slow models so that one bench's timed runs take about "
        f"{args.bench_budget:g} s). Speed-up = median latency of the original / median of the second model, runs "
        "interleaved. A pruned file byte-identical to another rounding's was not benched again: its cell "
        "repeats that rounding's figure, marked (= N).",
        "",
        "MACs are counted at batch 1 at the input shapes the prune used. Dynamic dims besides the batch were fixed "
        "with `--shape` (the same in prune and bench) for: "
        + (", ".join(f"`{Path(r['model']).name}` "
                     + " ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in r["shapes"].items()) for r in shaped)
           if shaped else "none")
        + " (the package's defaults for such dims: a sequence 128, others 224; tools/bench_latency.py's shapes "
          "where it lists the model).",
        "",
        "Noise: each model's own band at a batch is max(|1 - its A/A bench speed-up|, the 90th percentile of that "
        f"over all models at that batch: {floors[1]:.3f} at batch 1"
        + (f", {floors[32]:.3f} at batch 32" if any(speedup(r, 'aa', 32) for r in records) else "")
        + "). A speed-up below 1 - band counts as slower than the original beyond noise (**bold** in the tables). "
          "The default rounding counts as slower than --round-to 1 beyond noise when speed-up(8) / speed-up(1) "
          "< 1 - 2 x band (two measurements, each off by up to a band). The prune's own line has its own A/A "
          "control (5 rounds of the original against itself inside that 3 s timing; it uses the fastest runs, "
          "not medians), shown as printed.",
        "",
        "## Results", "",
        "Columns b1 / b32: speed-up at batch 1 / 32 with --round-to 1, the default (8), 16, and the A/A bench. "
        "MACs removed: --round-to 1 / default / 16.", ""]
    lines += tables(records, floors)
    fails = failures(records)
    if fails:
        lines += ["Failed commands (exit code and the one-line error):", ""] + fails + [""]
    lines += ["## Summary (counted from the tables above)", ""] + summary(records, floors) + [""]
    return "\n".join(lines)


def model_list(globs: str) -> list[Path]:
    paths = set()
    for g in globs.split(","):
        for p in glob.glob(g.strip(), recursive=True, root_dir=ROOT):
            q = Path(p)
            if q.suffix == ".onnx" and not str(q).startswith(EXCLUDED) and (ROOT / q).is_file():
                paths.add(q)
    return sorted(paths)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 2)[1],
                                 epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_GLOBS, help="comma-separated globs, relative to the repository "
                    f"(default {DEFAULT_GLOBS}; {EXCLUDED} is always left out)")
    ap.add_argument("--out", default="docs/rounding.md")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--runs", type=int, default=200, help="timed runs per bench at most (fewer for slow models)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up runs per bench at most")
    ap.add_argument("--bench-budget", type=float, default=2.5, help="about this many seconds of timed runs per bench")
    ap.add_argument("--json", help="also write the raw records here")
    ap.add_argument("--no-snapshot", action="store_true", help="run the live onnxprune/ of the working tree "
                    "(default: a copy taken at the start, so concurrent edits do not mix versions)")
    ap.add_argument("--from-json", metavar="FILE", help="measure nothing: write --out again from the records a "
                    "--json of an earlier run kept (its settings, date and package as recorded)")
    args = ap.parse_args()
    if args.from_json:
        return rerender(Path(args.from_json), args.out)
    paths = model_list(args.models)
    if not paths:
        print(f"no .onnx model matches {args.models}", file=sys.stderr)
        return 2
    if not args.no_snapshot:
        snapshot()
    env, known, records, start = environment(), known_shapes(), [], time.perf_counter()
    argv = sys.argv[1:]
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)} {time.perf_counter() - start:6.0f}s] {path}", flush=True)
        rec = measure(path, known, args)
        records.append(rec)
        d = rec["prune"][8]
        print(f"    default: exit {d['rc']}" + (f" {d.get('error')}" if d["rc"] else
                                                 f", {d.get('speed_line')}, warned={d['warned']}"
                                                 f" ({d.get('warning_words')})"), flush=True)
        print("    " + ", ".join(f"{k}: " + " ".join(f"b{b} {c['speedup']:.3f}" for b, c in
                                                     (v or {}).get("batches", {}).items())
                                 for k, v in rec["bench"].items()) + f" ({rec['wall_s']} s)", flush=True)
        wall = time.perf_counter() - start
        if i == len(paths):
            env["live_after"] = fingerprint(ROOT / "onnxprune")
        (ROOT / args.out).write_text(page(records, env, args, argv, wall, done=i == len(paths)))
        if args.json:
            settings = {k: getattr(args, k) for k in ("ratio", "runs", "warmup", "bench_budget")}
            Path(args.json).write_text(json.dumps({"env": env, "argv": argv, "settings": settings, "wall_s": wall,
                                                   "records": records}, indent=1, default=str))
    floors = noise_floors(records)
    print("\n".join(summary(records, floors)))
    print(f"total wall time {time.perf_counter() - start:.0f} s; wrote {args.out}")
    if RUN_DIR != ROOT:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    return 1 if any(r["prune"][8].get("violation") for r in records) else 0


def restore(rec: dict) -> dict:
    """A record read back from JSON: rounding and batch keys as ints again; the warning check redone from the
    recorded wording, so that a page written again follows this script's SLOWER."""
    rec["prune"] = {int(k): v for k, v in rec["prune"].items()}
    d = rec["prune"].get(8, {})
    if d.get("rc") == 0 and "below_1" in d:
        words = d.get("warning_words")
        d["warned"] = words is not None and f"onnxprune: warning: the pruned model runs {words}".startswith(SLOWER)
        d["violation"] = d["below_1"] and not d["warned"]
    rec["bench"] = {(k if k == "aa" else int(k)): (None if v is None else
                                                   {**v, "batches": {int(b): c for b, c in v.get("batches", {}).items()}})
                    for k, v in rec["bench"].items()}
    return rec


def rerender(path: Path, out: str) -> int:
    """--from-json: the page again from a saved run, nothing measured."""
    saved = json.loads(path.read_text())
    records = [restore(r) for r in saved["records"]]
    args = argparse.Namespace(**saved["settings"])
    argv = saved["argv"]
    text = page(records, saved["env"], args, argv, saved["wall_s"], done=True)
    text = text.replace("`\n\nDate:", f"` (page written again from its --json by `python tools/rounding_table.py "
                                      f"--from-json {path} --out {out}`; nothing re-measured)\n\nDate:", 1)
    (ROOT / out).write_text(text)
    print("\n".join(summary(records, noise_floors(records))))
    print(f"wrote {out} from {path}")
    return 1 if any(r["prune"][8].get("violation") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
