"""Calibration inputs: an .npz of arrays named after the model inputs, or a folder of .npy files."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import OnnxPruneError
from ..validation.feeds import Feeds, check_data, data_batches, load_arrays, session_inputs


@dataclass(frozen=True)
class Calibration:
    """Where calibration samples come from and how many to use."""

    path: str
    samples: int | None = None  # the first N samples only
    batch: int = 32
    points: int = 10  # output positions sampled per sample for reconstruction (He et al. use 10)
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.samples is not None and self.samples < 1) or self.batch < 1 or self.points < 1:
            raise OnnxPruneError("--calib-samples, --calib-points and the calibration batch size must be at least 1")


def _folder(path: Path, specs) -> dict[str, np.ndarray]:
    """A folder: NAME.npy per input (first axis = samples); for a one-input model, any .npy files in name
    order, each one sample (the input's rank minus the batch axis) or a batch of samples."""
    files = sorted(path.glob("*.npy"))
    if not files:
        raise OnnxPruneError(f"calibration folder {path} has no .npy files")
    names = [n for n, _ in specs]
    by_name = {f.stem: f for f in files}
    if all(n in by_name for n in names):
        return {n: np.load(by_name[n], allow_pickle=False) for n in names}
    if len(names) != 1:
        raise OnnxPruneError(f"calibration folder {path}: a model with inputs {', '.join(names)} needs one "
                             "NAME.npy per input")
    rank = len(specs[0][1]) if specs[0][1] is not None else None
    arrays = [np.load(f, allow_pickle=False) for f in files]
    try:
        return {names[0]: np.concatenate([a[None] if rank is not None and a.ndim == rank - 1 else a for a in arrays])}
    except ValueError as exc:
        raise OnnxPruneError(f"calibration folder {path}: the .npy files do not stack ({exc})") from None


def calibration_batches(cal: Calibration, session) -> tuple[Iterator[Feeds], int]:
    """Batches of the calibration samples for this session's inputs, and how many samples there are."""
    specs, dtypes = session_inputs(session)
    path = Path(cal.path)
    if path.is_dir():
        arrays = _folder(path, specs)
    else:
        arrays = load_arrays(path)
        if "" in arrays and len(specs) == 1:  # a single .npy for a single-input model
            arrays = {specs[0][0]: arrays.pop("")}
    if cal.samples is not None:
        arrays = {k: v[:cal.samples] for k, v in arrays.items()}
    n = check_data(arrays, specs, dtypes)
    return data_batches(arrays, specs, dtypes, cal.batch), n


def raw_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a calibration source as stored: an .npz's by key, a folder's .npy files by name, an .npy as ''."""
    path = Path(path)
    if not path.is_dir():
        return load_arrays(path)
    try:
        return {f.name: np.load(f, allow_pickle=False) for f in sorted(path.glob("*.npy"))}
    except (OSError, ValueError) as exc:
        raise OnnxPruneError(f"calibration folder {path}: {str(exc).splitlines()[0]}") from None


def data_digest(path: str | Path) -> dict:
    """sha256 over the arrays' names, dtypes, shapes and bytes (in name order), with each array's shape and dtype."""
    arrays = raw_arrays(path)
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.data)
    return {"sha256": h.hexdigest(),
            "arrays": {k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in sorted(arrays)}}
