"""Progress lines and warnings on stderr (stdout keeps the results)."""
from __future__ import annotations

import re
import sys
import time

QUIET = False
START = time.perf_counter()

COUNTED = re.compile(r"group (\d+)/(\d+)\b")  # a line that says K of N groups are done
STAGE = {"since": START, "last": START, "done": 0, "total": 0}  # the counted stage under way


def progress(message: str) -> None:
    """One line per stage on stderr, with the time since start (stdout keeps the results); --quiet: none.

    A line that starts `group K/N` (K groups done) also gets the time the stage took so far and an
    estimate of the time left: `[12/40 groups, 3.1 s, ~7 s left]`.
    """
    if QUIET:
        return
    now = time.perf_counter()
    counted = COUNTED.match(message)
    if counted:
        message += _eta(int(counted[1]), int(counted[2]), now)
    else:
        STAGE.update(since=now, done=0, total=0)
    STAGE["last"] = now
    print(f"[onnxprune {now - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _eta(done: int, total: int, now: float) -> str:
    """' [K/N groups, 3.1 s, ~7 s left]': the stage's pace so far, extrapolated to its remaining groups."""
    if total != STAGE["total"] or done <= STAGE["done"]:  # a new counted stage starts after the last line
        STAGE.update(since=STAGE["last"], total=total)
    STAGE["done"] = done
    spent = now - STAGE["since"]
    left = spent / max(done, 1) * max(total - done, 0)
    return f" [{done}/{total} groups, {_seconds(spent)}, ~{_seconds(left)} left]"


def _seconds(s: float) -> str:
    """3.1 s, 42 s, 7 min."""
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def warn(message: str) -> None:
    """One warning line on stderr (never silenced by --quiet)."""
    print(f"onnxprune: warning: {message}", file=sys.stderr, flush=True)

