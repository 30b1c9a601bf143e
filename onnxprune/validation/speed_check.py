"""The speed line of every prune: the written model timed against the original in a few seconds, runs
interleaved, with an A/A control (the original against itself) that says how far the timing can be trusted."""
from __future__ import annotations

import time

import numpy as np

from ..runtime.feeds import input_dims, random_inputs, session_inputs
from ..runtime.providers import CHAINS, open_session
from .bench import _first_run, bound_runner, interleaved, own_batch
from .validate import ModelBytes

ROUNDS = 5  # the budget is split in rounds; each round gives one speed-up and one control ratio
NOISY = 0.05  # an A/A control further than this from 1.00x makes the timing untrustworthy
MIN_RUNS, MAX_RUNS = 3, 400  # runs of each model per round


def provider_name(short: str) -> str:
    """onnxruntime's own name of a provider (cpu -> CPUExecutionProvider)."""
    return CHAINS.get(short, [short])[0]


def quick_speedup(original: ModelBytes, pruned: ModelBytes, provider: str = "auto", batch: int | None = None,
                  threads: int | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
                  budget_s: float = 3.0) -> dict:
    """Time `pruned` against `original` for about `budget_s` seconds: the speed-up (median over rounds of the
    fastest runs' ratio), its range, and the A/A control's range."""
    start = time.perf_counter()
    ref = open_session(original, provider, threads, spin=False)  # the runs alternate: no spinning threads
    new = open_session(pruned, provider, threads, spin=False)
    specs, dtypes = session_inputs(ref.session)
    size = batch or own_batch(specs, shapes)
    dims = input_dims(specs, shapes, size)
    feeds = random_inputs(dtypes, dims)
    runners = [bound_runner(ref, feeds), bound_runner(ref, feeds), bound_runner(new, feeds)]
    for model, run in zip((original, original, pruned), runners):
        _first_run(model, run, dims)
    t0 = time.perf_counter()
    interleaved(runners, 2)  # warm-up, which also prices one run of each
    each = (time.perf_counter() - t0) / 2
    left = max(budget_s - (time.perf_counter() - start), budget_s / 2)
    per_round = int(np.clip(left / ROUNDS / max(each, 1e-6), MIN_RUNS, MAX_RUNS))
    rounds = [[min(t) for t in interleaved(runners, per_round)] for _ in range(ROUNDS)]  # load only adds time
    speedups = sorted(r[0] / r[2] for r in rounds)
    controls = sorted(r[0] / r[1] for r in rounds)
    return {"speedup": round(float(np.median(speedups)), 4), "range": [round(speedups[0], 4), round(speedups[-1], 4)],
            "control": [round(controls[0], 4), round(controls[-1], 4)], "batch": size,
            "provider": provider_name(ref.provider), "threads": ref.threads, "runs": per_round * ROUNDS,
            "original_ms": round(min(r[0] for r in rounds) * 1000, 4),
            "pruned_ms": round(min(r[2] for r in rounds) * 1000, 4),
            "seconds": round(time.perf_counter() - start, 2)}


def noisy(record: dict) -> bool:
    """Whether the A/A control strayed further from 1.00x than NOISY."""
    low, high = record["control"]
    return low < 1 - NOISY or high > 1 + NOISY


def speed_line(record: dict) -> str:
    """`speed-up 1.31x at batch 1 on CPUExecutionProvider (A/A control 0.99-1.01x)`."""
    low, high = record["control"]
    return (f"speed-up {record['speedup']:.2f}x at batch {record['batch']} on {record['provider']} "
            f"(A/A control {low:.2f}-{high:.2f}x; {record['original_ms']:.3f} -> {record['pruned_ms']:.3f} ms, "
            f"{record['runs']} runs each in {record['seconds']:.1f} s)")


def speed_warnings(record: dict, round_to: int) -> list[str]:
    """What the user must hear: a slower result (and what to try), a timing too noisy to trust."""
    out = []
    if noisy(record):
        low, high = record["control"]
        out.append(f"the timing is noisy (the original against itself ran {low:.2f}-{high:.2f}x): other load on "
                   "the machine? The speed-up is uncertain; `onnxprune bench` times longer")
    if record["speedup"] < 1:
        bigger = 16 if round_to < 16 else 2 * round_to
        low, high = record["control"]
        where = f"{record['speedup']:.2f}x at batch {record['batch']} on {record['provider']}"
        how = (f"no faster than the original ({where}, inside the timing's own noise {low:.2f}-{high:.2f}x)"
               if record["speedup"] >= low else f"SLOWER than the original ({where})")
        out.append(f"the pruned model runs {how}: channel counts off the kernels' multiples are the usual cause; "
                   f"try --round-to {bigger}, or a speed target (--target-speedup 1.2)")
    return out
