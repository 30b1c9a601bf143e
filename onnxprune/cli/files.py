"""Paths: no output overwrites an input or another output; every output is written whole or not at all."""
from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OnnxPruneError


INPUT_ARGS = {"model": "the model", "original": "ORIGINAL", "pruned": "PRUNED", "other": "OTHER", "plan": "--plan",
              "calib": "--calib", "data": "--data", "labels": "--labels", "overrides": "--overrides"}
OUTPUT_ARGS = {"output": "-o", "save_plan": "--save-plan", "report": "--report", "json": "--json", "plot": "--plot"}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_paths(args: argparse.Namespace) -> None:
    """No output may be an input (or its external data) or another output: each would be overwritten."""
    inputs = [(INPUT_ARGS[k], Path(v)) for k in INPUT_ARGS if isinstance(v := getattr(args, k, None), str)]
    inputs += [(f"{what}'s data", Path(str(p) + ".data")) for what, p in inputs if p.suffix == ".onnx"]
    outputs = [(OUTPUT_ARGS[k], Path(v)) for k in OUTPUT_ARGS if isinstance(v := getattr(args, k, None), str)]
    for i, (what, out) in enumerate(outputs):
        for name, path in inputs:
            if _same_file(out, path):
                raise OnnxPruneError(f"{what} {out} is {name}: an input is never overwritten")
        for other, path in outputs[:i]:
            if _same_file(out, path):
                raise OnnxPruneError(f"{what} and {other} are the same file ({out}): one would overwrite the other")


def check_output(path: str | None, what: str, make_parent: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a directory, a missing or read-only folder.

    With `make_parent` a missing folder is not refused: the model's writer creates it (see undo_new_folders).
    """
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise OnnxPruneError(f"{what} {path} is a directory; give a file name")
    if target.exists() and not target.is_file():  # a device or a pipe: written into, never replaced
        if what in ("-o", "--plot"):
            raise OnnxPruneError(f"{what} {path} is not a regular file; give a file name")
        return
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        if not make_parent:
            raise OnnxPruneError(f"{what} {path}: folder {parent} does not exist")
        parent = next(p for p in parent.parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OnnxPruneError(f"{what} {path}: folder {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise OnnxPruneError(f"{what} {path} exists and is not writable")
    try:  # the real test (root passes os.access everywhere; /proc, /sys and read-only mounts refuse here)
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OnnxPruneError(f"{what} {path}: cannot write in folder {parent} ({exc.strerror})") from None


def _missing_folders(path: str | None) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first: what writing it would create."""
    if path is None:
        return []
    return [p for p in Path(path).absolute().parents if not p.exists()]


@contextmanager
def undo_new_folders(path: str | None) -> Iterator[None]:
    """A run that fails leaves no folder behind: those that writing `path` created are removed (when empty)."""
    missing = _missing_folders(path)
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:  # not created after all, or something else was put in it
                break
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    """Write a text output atomically (a temporary file in the same folder, then a rename)."""
    target = Path(path)
    if target.exists() and not target.is_file():  # /dev/null, a pipe: write into it, do not replace it
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", dir=target.parent if str(target.parent) else ".")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: a report is as readable as the model written
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

