"""The README of a models/ folder: what the files are and how to remake them, then a table of them.

Shared by the export tools (each runs in its own virtualenv; this module needs only the standard library).
"""
from __future__ import annotations

from pathlib import Path


def write_model_readme(folder: Path, intro: str, columns: list[str], rows: list[str], sizes: list[int]) -> None:
    """Write FOLDER/README.md: the intro, one table row per file, and the files' total size."""
    table = "\n".join([f"| {' | '.join(columns)} |", "|" + "---|" * len(columns), *rows])
    text = f"{intro.rstrip()}\n\n{table}\n\nTotal: {len(rows)} files, {sum(sizes) / 1024 / 1024:.2f} MB.\n"
    (folder / "README.md").write_text(text)
