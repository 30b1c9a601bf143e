"""`sensitivity`: prune each group alone at a ladder of ratios and measure what it costs."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..analysis.analyze import build_analysis
from ..errors import OnnxPruneError
from ..api import run_pipeline
from ..loading import prepare
from ..plan import make_plan
from ..rewrite.merging import MergeOptions
from ..scoring import score_groups
from ..selection import Selection, select
from .compare import Accuracy
from .providers import open_session
from .validate import Inputs, compare_runs, open_inputs

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _point(agreement: dict, accuracy: Accuracy | None) -> dict:
    """One ladder point: the worst output's cosine / rel L2 / top-1 agreement, and accuracy with labels."""
    outs = [a.to_json() for a in agreement.values()]
    point = {"cosine": min(o["cosine"] for o in outs), "rel_l2": max(o["rel_l2"] for o in outs)}
    top1 = [o["top1_agreement"] for o in outs if "top1_agreement" in o]
    if top1:
        point["top1_agreement"] = min(top1)
    if accuracy is not None:
        point["accuracy"] = accuracy.to_json()["pruned"]
    return point


def sensitivity(model: str, ratios: tuple[float, ...] = RATIOS, criterion: str = "l1", inputs: Inputs | None = None,
                provider: str = "auto", merge: MergeOptions | None = None,
                progress: Callable[[str], None] = lambda _: None, threads: int | None = None) -> dict:
    """Per prunable group and ratio: remove that share of the group's lowest-ranked channels, nothing else.

    `inputs.seed` seeds the random inputs and the `random` criterion; `threads` sets onnxruntime's CPU threads.
    """
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise OnnxPruneError("--ratios must be fractions strictly between 0 and 1")
    inputs, merge = inputs or Inputs(), merge or MergeOptions()
    prep = prepare(model)
    analysis = build_analysis(prep, inputs.shapes)
    scores = score_groups(prep, analysis, criterion, seed=inputs.seed)
    ref = open_session(str(model), provider, threads)
    source = open_inputs(inputs, ref.session)
    reference = [ref.session.run(None, feeds) for feeds in source.batches]  # the original's outputs, once
    groups = [g for g in analysis.prunable if g.id in scores]
    report = {"model": str(model), "criterion": criterion, "compensation": asdict(merge), "ratios": list(ratios),
              "metric": "accuracy" if inputs.labels else "cosine", "provider": ref.provider, "threads": ref.threads,
              "seed": inputs.seed,
              "inputs": source.description, "groups": []}
    unpruned = _point(*compare_runs(ref, None, open_inputs(inputs, ref.session), reference))
    if "accuracy" in unpruned:
        report["baseline_accuracy"] = unpruned["accuracy"]
    progress(f"{len(groups)} prunable groups x {len(ratios)} ratios, ranked by {criterion}, on {ref.provider}")
    for i, g in enumerate(groups, 1):
        entry = {"id": g.id, "channels": g.channels, "macs_share": g.macs_share, "points": []}
        for r in ratios:
            removed = select(analysis, {g.id: scores[g.id]}, Selection(ratio=r))
            point = {"ratio": r, "removed": len(removed.get(g.id, [])), **unpruned}
            if point["removed"]:
                plan = make_plan(analysis, removed, criterion=criterion)
                pruned = run_pipeline(prepare(model), inputs.shapes, plan=plan, merge=merge).model
                got = open_session(pruned.SerializeToString(), provider, threads)
                point.update(_point(*compare_runs(ref, got, open_inputs(inputs, ref.session), reference)))
            entry["points"].append(point)
        report["groups"].append(entry)
        progress(f"group {i}/{len(groups)} {g.id}: {report['metric']} "
                 + " ".join(f"{p['ratio']:g}:{p[report['metric']]:.4f}" for p in entry["points"]))
    return report


def pyplot():
    """matplotlib's pyplot on a file backend; a clear error when the optional extra is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("--plot needs matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def plot_sensitivity(report: dict, path: str | Path) -> None:
    """One curve per group: the report's metric against the ratio removed (needs matplotlib)."""
    plt = pyplot()
    metric = report["metric"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, g in enumerate(report["groups"]):  # colours repeat every 10 curves: change the line style with them
        ax.plot([p["ratio"] for p in g["points"]], [p[metric] for p in g["points"]], marker="o", lw=1, ms=3,
                ls=("-", "--", ":", "-.")[i // 10 % 4], label=g["id"][:32])
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel("test accuracy" if metric == "accuracy" else "output cosine similarity (worst output)")
    ax.set_title(f"{Path(report['model']).name}: per-group sensitivity ({report['criterion']})")
    ax.grid(alpha=0.3)
    if len(report["groups"]) <= 30:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
