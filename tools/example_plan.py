"""Write an example plan: drop the last quarter of the channels of every prunable group.

    python tools/example_plan.py MODEL PLAN.json

Not an importance criterion (those are chosen by `onnxprune prune --criterion`): a fixed, readable
plan that shows the plan format and exercises `onnxprune prune --plan`.
"""
from __future__ import annotations

import sys

from onnxprune import analyze, make_plan, save_plan


def main(model: str, out: str) -> None:
    analysis = analyze(model)
    removed = {g.id: list(range(g.channels - max(1, g.channels // 4), g.channels)) for g in analysis.prunable}
    save_plan(make_plan(analysis, removed, note="example: last quarter of every prunable group"), out)
    print(f"wrote {out}: {sum(map(len, removed.values()))} channels in {len(removed)} groups")


if __name__ == "__main__":
    main(*sys.argv[1:3])
