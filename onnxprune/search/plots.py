"""Plots of the searches: sensitivity curves, an allocation's kept shares, a speed search (matplotlib)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from ..errors import OnnxPruneError

ELLIPSIS = "…"
MARGIN = 0.1  # of the measured range, around the speed plot's points and target


def pyplot():
    """matplotlib's pyplot on a file backend; a clear error when the optional extra is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("--plot needs matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters from the middle, so both its start and its end stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head):]


def short_labels(ids: Sequence[str], width: int = 32) -> list[str]:
    """Each id in at most `width` characters; ids that still read the same get their position, ` #3`."""
    labels = [shorten(i, width) for i in ids]
    counts = Counter(labels)
    return [s if counts[s] == 1 else shorten(i, width - len(f" #{k}")) + f" #{k}"
            for k, (i, s) in enumerate(zip(ids, labels), 1)]


def plot_sensitivity(report: dict, path: str | Path):
    """One curve per group: the report's metric against the ratio removed; returns the (closed) Figure."""
    plt = pyplot()
    metric = report["metric"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    labels = short_labels([g["id"] for g in report["groups"]])
    for i, (g, label) in enumerate(zip(report["groups"], labels)):  # colours repeat every 10: vary the style too
        ax.plot([p["ratio"] for p in g["points"]], [p[metric] for p in g["points"]], marker="o", lw=1, ms=3,
                ls=("-", "--", ":", "-.")[i // 10 % 4], label=label)
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel({"accuracy": "test accuracy", "top1_agreement": "top-1 agreement with the original"}.get(
        metric, "output cosine similarity (worst output)"))
    title = f"{Path(report['model']).name}: per-group sensitivity ({report['criterion']})"
    if report.get("inputs", {}).get("source") == "random":
        title += "\non random-noise inputs: give --data for curves that mean something"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(report["groups"]) <= 30:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(plt, fig, path, 120)


def allocation_title(a: dict) -> str:
    """The allocation panel's title: the allocation kept, and why when a simpler one beat the searched one."""
    name = a.get("allocation", "sensitivity")
    compared = a.get("compared", {})
    kept, losses = compared.get("kept", name), compared.get("losses", {})
    measured = a.get("measured_loss", float("nan"))
    if kept == name:
        return f"allocation by {name}: predicted loss {a['predicted_loss']:.3f}, measured {measured:.3f}"
    # predicted_loss is then not a prediction for the bars shown: leave it out
    beaten = f"{name}'s {losses[name]:.3f}" if name in losses else name
    return (f"{kept} allocation, kept over {name}: it measured lower\n"
            f"(measured loss {losses.get(kept, measured):.3f} vs {beaten})")


def speed_limits(measured: Sequence[float], target: float, margin: float = MARGIN) -> tuple[float, float]:
    """y limits of the speed plot: the measured speed-ups and the target, with a margin (never predictions)."""
    lo, hi = min(*measured, target), max(*measured, target)
    pad = max((hi - lo) * margin, 0.05 * hi)
    return lo - pad, hi + pad


def _save(plt, fig, path: str | Path, dpi: int):
    """Write the figure and close it; returns it for whoever wants to look at what was drawn."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return fig


def plot_allocation(allocation: dict | None, speed: dict | None, path: str | Path):
    """The allocation (kept share of each group, in graph order) and the speed search's trade-off curve;
    returns the (closed) Figure."""
    plt = pyplot()
    panels = [x for x in (allocation, speed) if x]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    axes = list(axes[0])
    if allocation:
        _allocation_panel(axes.pop(0), allocation)
    if speed:
        _speed_panel(axes.pop(0), speed)
    return _save(plt, fig, path, 110)


def _allocation_panel(ax, allocation: dict) -> None:
    """Bars of each group's kept share, titled by the allocation that was kept."""
    groups = list(allocation["groups"].values())
    ax.bar(range(len(groups)), [1 - g["ratio"] for g in groups], color="tab:blue")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(short_labels(list(allocation["groups"]), 20), rotation=60, ha="right", fontsize=6)
    ax.set_xlabel("prunable group, in graph order")
    ax.set_ylabel("share of channels kept")
    ax.set_ylim(0, 1.05)
    ax.set_title(allocation_title(allocation), fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _speed_panel(ax, speed: dict) -> None:
    """Measured speed-up against the MACs removed; predictions clipped to the measured range; the choice starred."""
    steps = sorted((st for st in speed["steps"] if "speedup" in st), key=lambda st: st["target_macs"])
    others = sorted(speed.get("bisection_steps", []), key=lambda st: st["target_macs"])
    chosen = speed.get("chosen") or next((st for st in steps if st.get("chosen")), None)
    measured = [st["speedup"] for st in steps + others] + ([chosen["speedup"]] if chosen else [])
    limits = speed_limits(measured or [1.0], speed["target_speedup"])
    ax.plot([st["target_macs"] for st in steps], [st["speedup"] for st in steps], marker="o", label="measured")
    if others:
        ax.plot([st["target_macs"] for st in others], [st["speedup"] for st in others], marker="s", ms=4, ls=":",
                color="tab:green", label="measured, global threshold (bisection)")
    predicted = [(st["target_macs"], st["predicted_speedup"]) for st in steps if "predicted_speedup" in st]
    if predicted:  # the latency model's rounds: what it predicted too
        _predictions(ax, predicted, limits)
    ax.axhline(speed["target_speedup"], color="tab:red", ls="--", lw=1, label="target")
    if chosen:
        _mark_chosen(ax, chosen)
    ax.set_ylim(*limits)
    ax.set_xlabel("fraction of MACs removed")
    ax.set_ylabel("measured speed-up")
    ax.set_title(f"speed search on {speed['provider']}, batch {speed['batch']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _mark_chosen(ax, chosen: dict) -> None:
    """A star, labelled, on the step that was kept."""
    ax.plot([chosen["target_macs"]], [chosen["speedup"]], marker="*", ms=14, ls="none", color="gold",
            markeredgecolor="black", zorder=5,
            label=f"chosen: {chosen['target_macs']:.0%} fewer MACs, {chosen['speedup']:.2f}x")
    ax.annotate("chosen", (chosen["target_macs"], chosen["speedup"]), textcoords="offset points", xytext=(6, -12),
                fontsize=8)


def _predictions(ax, points: list[tuple[float, float]], limits: tuple[float, float]) -> None:
    """The latency model's predictions: those inside the limits as crosses, the others on the edge as arrows."""
    lo, hi = limits
    inside = [(x, y) for x, y in points if lo <= y <= hi]
    if inside:
        ax.plot(*zip(*inside), marker="x", ls="none", color="tab:gray", label="latency model")
    label = "latency model, clipped to the axis"
    for edge, marker, beyond in ((hi, "^", lambda y: y > hi), (lo, "v", lambda y: y < lo)):
        out = [(x, y) for x, y in points if beyond(y)]
        if not out:
            continue
        ax.plot([x for x, _ in out], [edge] * len(out), marker=marker, ls="none", color="tab:gray", clip_on=False,
                label=label)
        label = "_nolegend_"  # one legend entry for both edges
        for x, y in out:  # the value it predicted, since the marker no longer shows it
            ax.annotate(f"{y:.2f}x", (x, edge), textcoords="offset points", fontsize=7, color="tab:gray",
                        xytext=(4, -10 if edge == hi else 4))
