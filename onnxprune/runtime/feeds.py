"""Model inputs for validation runs: random ones from the input specs, or arrays from a file, in batches."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import zipfile

import numpy as np

from ..graph.shapes import InputSpec, check_given_dims, concrete_dims
from ..errors import OnnxPruneError

Feeds = dict[str, np.ndarray]
ORT_TYPES = {"float": np.float32, "double": np.float64, "float16": np.float16, "bool": np.bool_,
             **{f"{k}{b}": np.dtype(f"{k}{b}").type for k in ("int", "uint") for b in (8, 16, 32, 64)}}


def session_inputs(session) -> tuple[list[InputSpec], dict[str, np.dtype]]:
    """(name, declared shape) pairs and numpy dtypes of an onnxruntime session's inputs."""
    specs, dtypes = [], {}
    for i in session.get_inputs():
        specs.append((i.name, tuple(d if isinstance(d, int) else None for d in i.shape)))
        inner = i.type[len("tensor("):-1] if i.type.startswith("tensor(") else i.type
        if inner not in ORT_TYPES:
            raise OnnxPruneError(f"input '{i.name}' has type {i.type}, which validation cannot feed")
        dtypes[i.name] = np.dtype(ORT_TYPES[inner])
    return specs, dtypes


def input_dims(specs: list[InputSpec], given: dict[str, tuple[int, ...]] | None = None,
               batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete shapes as analysis resolves them (static dims, then `given`); `batch` sets a dynamic first dim."""
    given = dict(given or {})
    check_given_dims(specs, given)
    dims = concrete_dims(specs, 0, given)
    if batch is not None:
        for name, declared in specs:
            if declared and isinstance(declared[0], int) and declared[0] != batch:
                raise OnnxPruneError(f"input '{name}' has a static batch of {declared[0]}; batch {batch} cannot run")
            dims[name] = (batch,) + dims[name][1:]
    return dims


def random_inputs(dtypes: dict[str, np.dtype], dims: dict[str, tuple[int, ...]], seed: int = 0) -> Feeds:
    """Standard normal floats, 0/1 integers, at the given shapes."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(dims[name]) if np.issubdtype(dtype, np.floating)
                   else rng.integers(0, 2, dims[name])).astype(dtype) for name, dtype in dtypes.items()}


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz file (name -> array) or a single .npy (name '')."""
    path = Path(path)
    if not path.is_file():
        raise OnnxPruneError(f"{path}: no such data file")
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if not zipfile.is_zipfile(path) and magic != b"\x93NUMPY":
            raise ValueError("it is neither an .npz (zip) archive nor an .npy array")
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a plain .npy under another name
            raise ValueError("it holds one unnamed array")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise OnnxPruneError(f"{path} is not an .npz of arrays named after the inputs (or an .npy): "
                             f"{str(exc).splitlines()[0]}") from None


def check_data(arrays: dict[str, np.ndarray], specs: list[InputSpec], dtypes: dict[str, np.dtype]) -> int:
    """Every input present with the right rank and static dims, one sample count for all; returns it."""
    counts = set()
    for name, declared in specs:
        if name not in arrays:
            raise OnnxPruneError(f"the data has no array for input '{name}' (it has {', '.join(sorted(arrays)) or 'none'})")
        a = arrays[name]
        if declared is not None and (a.ndim != len(declared) or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(declared[1:], a.shape[1:]))):
            raise OnnxPruneError(f"data for input '{name}' has shape {list(a.shape)}; the model declares "
                                 f"{['?' if d is None else d for d in declared]} (first axis = samples)")
        if np.issubdtype(dtypes[name], np.floating) != np.issubdtype(a.dtype, np.floating):
            raise OnnxPruneError(f"data for input '{name}' is {a.dtype}; the model takes {dtypes[name]}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = np.nonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0]
            raise OnnxPruneError(f"data for input '{name}' holds NaN or Inf values ({len(bad)} samples, the first "
                                 f"is sample {int(bad[0])})")
        counts.add(a.shape[0])
    if len(counts) != 1:
        raise OnnxPruneError(f"the inputs' arrays have different sample counts: {sorted(counts)}")
    if 0 in counts:
        raise OnnxPruneError("the data holds 0 samples")
    return counts.pop()


def data_batches(arrays: dict[str, np.ndarray], specs: list[InputSpec], dtypes: dict[str, np.dtype],
                 batch: int) -> Iterator[Feeds]:
    """Consecutive batches of the data (a static batch dim sets the batch size)."""
    n = check_data(arrays, specs, dtypes)
    static = {d[0] for _, d in specs if d and isinstance(d[0], int) and d[0] > 0}
    if static:
        batch = static.pop()
        if n % batch:
            raise OnnxPruneError(f"{n} samples do not fill batches of the model's static batch size {batch}")
    for start in range(0, n, batch):
        yield {name: np.ascontiguousarray(arrays[name][start:start + batch], dtype=dtypes[name]) for name, _ in specs}


def load_labels(path: str | Path, count: int) -> np.ndarray:
    """Integer class labels, one per sample: an .npy, or an .npz holding one array (or one named 'labels')."""
    arrays = load_arrays(path)
    if len(arrays) > 1:
        arrays = {k: v for k, v in arrays.items() if k == "labels"}
    if len(arrays) != 1:
        raise OnnxPruneError(f"{path}: expected one array of labels (or one named 'labels')")
    labels = next(iter(arrays.values()))
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != count:
        raise OnnxPruneError(f"{path}: labels must be {count} integers (one per sample), got "
                             f"{labels.dtype} {list(labels.shape)}")
    return labels.astype(np.int64)
