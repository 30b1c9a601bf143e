"""Plots of the searches: sensitivity curves, an allocation's kept shares, a speed search (matplotlib)."""
from __future__ import annotations

from pathlib import Path

from ..errors import OnnxPruneError


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
    ax.set_ylabel({"accuracy": "test accuracy", "top1_agreement": "top-1 agreement with the original"}.get(
        metric, "output cosine similarity (worst output)"))
    ax.set_title(f"{Path(report['model']).name}: per-group sensitivity ({report['criterion']})")
    ax.grid(alpha=0.3)
    if len(report["groups"]) <= 30:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_allocation(allocation: dict | None, speed: dict | None, path: str | Path) -> None:
    """The allocation (kept share of each group, in graph order) and the speed search's trade-off curve."""
    plt = pyplot()
    panels = [x for x in (allocation, speed) if x]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    axes = list(axes[0])
    if allocation:
        ax = axes.pop(0)
        groups = list(allocation["groups"].values())
        ax.bar(range(len(groups)), [1 - g["ratio"] for g in groups], color="tab:blue")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([gid[-20:] for gid in allocation["groups"]], rotation=60, ha="right", fontsize=6)
        ax.set_xlabel("prunable group, in graph order")
        ax.set_ylabel("share of channels kept")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"allocation by {allocation.get('allocation', 'sensitivity')}: predicted loss {allocation['predicted_loss']:.3f}, "
                     f"measured {allocation.get('measured_loss', float('nan')):.3f}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if speed:
        ax = axes.pop(0)
        steps = sorted((st for st in speed["steps"] if "speedup" in st), key=lambda st: st["target_macs"])
        ax.plot([st["target_macs"] for st in steps], [st["speedup"] for st in steps], marker="o", label="measured")
        if steps and "predicted_speedup" in steps[0]:  # the latency model's rounds: what it predicted too
            ax.plot([st["target_macs"] for st in steps], [st["predicted_speedup"] for st in steps], marker="x",
                    ls="none", color="tab:gray", label="latency model")
        ax.axhline(speed["target_speedup"], color="tab:red", ls="--", lw=1, label="target")
        ax.set_xlabel("fraction of MACs removed")
        ax.set_ylabel("measured speed-up")
        ax.set_title(f"speed search on {speed['provider']}, batch {speed['batch']}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
