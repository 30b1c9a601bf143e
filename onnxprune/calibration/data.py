"""Calibration inputs: an .npz of arrays named after the model inputs, or a folder of .npy files."""
from __future__ import annotations

import hashlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import OnnxPruneError
from ..runtime.feeds import Feeds, check_data, load_arrays, session_inputs


@dataclass(frozen=True)
class Calibration:
    """Where calibration samples come from and how many to use."""

    path: str
    samples: int | None = None  # the first N samples only
    batch: int = 32
    points: int | None = None  # output positions per sample for reconstruction: None = POINTS (He et al.), or
    #                            every position of a masked sequence (see reconstruction)
    seed: int = 0
    mask: str | None = "auto"  # the input whose zeros mark padding (auto: one input named like *mask*; None: none)

    def __post_init__(self) -> None:
        if (self.samples is not None and self.samples < 1) or self.batch < 1 or \
                (self.points is not None and self.points < 1):
            raise OnnxPruneError("--calib-samples, --calib-points and the calibration batch size must be at least 1")

    def mask_input(self, specs) -> str | None:
        """The input whose zero positions are padding that no statistic may count (None: no such input)."""
        names = [n for n, _ in specs]
        if self.mask is None or self.mask == "none":
            return None
        if self.mask != "auto":
            if self.mask not in names:
                raise OnnxPruneError(f"--calib-mask {self.mask}: the model has no such input (it has "
                                     f"{', '.join(names)})")
            return self.mask
        found = [n for n, dims in specs if "mask" in n.lower() and (dims is None or len(dims) == 2)]
        return found[0] if len(found) == 1 else None


POINTS = 10  # output positions sampled per calibration sample for reconstruction when nothing masks them


def valid_rows(x: np.ndarray, axis: int, valid: np.ndarray | None) -> tuple[np.ndarray, int]:
    """x without its padding positions: where its first two dims are the mask's [N, T] and its channel axis
    comes after them, the positions whose mask is 0 are dropped (-> [valid, ...]); the new channel axis."""
    if valid is not None and x.ndim >= 3 and tuple(x.shape[:2]) == valid.shape and axis >= 2:
        return x[valid], axis - 1
    return x, axis


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
    samples = Samples(cal, specs, dtypes)
    return samples.batches(cal.batch), samples.count


class _Stored:
    """One uncompressed .npy (a file, or a stored member of an .npz) read a range of samples at a time."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.offset, self.dtype, self.shape = path, offset, dtype, shape
        self.ndim = len(shape)
        self.row = int(np.prod(shape[1:], dtype=np.int64)) if shape else 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(stop, start)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row * self.dtype.itemsize)
            out = np.fromfile(f, self.dtype, (stop - start) * self.row)
        return out.reshape((stop - start,) + tuple(self.shape[1:]))


def _npy_header(f) -> tuple[np.dtype, tuple[int, ...], bool]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return np.dtype(dtype), tuple(shape), fortran


def _lazy(path: Path) -> dict[str, _Stored] | None:
    """The arrays of an .npy or an .npz with uncompressed members, as readers that hold no samples; None
    when the file is stored otherwise (compressed, Fortran order, object arrays): then it is loaded."""
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                dtype, shape, fortran = _npy_header(f)
                where = {"": (f.tell(), dtype, shape, fortran)}
        else:
            where = {}
            with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
                for info in z.infolist():
                    if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED \
                            or info.flag_bits & 1:
                        return None
                    raw.seek(info.header_offset)
                    head = raw.read(30)
                    name_len, extra_len = struct.unpack("<HH", head[26:30])
                    raw.seek(info.header_offset + 30 + name_len + extra_len)
                    dtype, shape, fortran = _npy_header(raw)
                    where[info.filename[:-4]] = (raw.tell(), dtype, shape, fortran)
    except (OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None  # load_arrays says what is wrong with it
    if any(fortran or dtype.hasobject or not shape for _, dtype, shape, fortran in where.values()):
        return None
    return {k: _Stored(path, off, dtype, shape) for k, (off, dtype, shape, _) in where.items()}


_CHECKED: dict[tuple, int] = {}  # (path, size, mtime, samples, inputs) -> sample count, once per process


class Samples:
    """The calibration samples for a model's inputs, read a range at a time: an .npy, or an .npz of
    uncompressed arrays (as np.savez writes them), is never held whole; a folder or a compressed .npz is."""

    def __init__(self, cal: Calibration, specs, dtypes: dict[str, np.dtype]):
        path = Path(cal.path)
        arrays = None if path.is_dir() or not path.is_file() else _lazy(path)
        if arrays is None:
            arrays = _folder(path, specs) if path.is_dir() else load_arrays(path)
        if "" in arrays and len(specs) == 1:  # a single .npy for a single-input model
            arrays = {specs[0][0]: arrays.pop("")}
        self.specs, self.dtypes, self.arrays = specs, dtypes, arrays
        self.limit = cal.samples
        names = [n for n, _ in specs]
        lazy = all(isinstance(arrays.get(n), _Stored) for n in names)
        if not lazy:
            if cal.samples is not None:
                self.arrays = {k: v[:cal.samples] for k, v in arrays.items()}
            self.count = check_data(self.arrays, specs, dtypes)
            return
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, cal.samples, tuple(names),
               tuple(str(dtypes[n]) for n in names))
        if key not in _CHECKED:  # every sample checked (NaN/Inf too), a few at a time, once per process
            if any(n not in arrays for n in names) or len({len(arrays[n]) for n in names}) != 1:
                check_data({n: arrays[n][:len(arrays[n])] for n in names if n in arrays}, specs, dtypes)
            total = min(len(arrays[names[0]]), cal.samples or len(arrays[names[0]]))
            step = max(1, (64 << 20) // max(sum(arrays[n].row * arrays[n].dtype.itemsize for n in names), 1))
            for start in range(0, max(total, 1), step):
                try:
                    check_data({n: arrays[n][start:min(start + step, total)] for n in names}, specs, dtypes)
                except OnnxPruneError:  # the error as the whole set gives it (sample indices and counts)
                    check_data({n: arrays[n][:total] for n in names}, specs, dtypes)
                    raise
            _CHECKED[key] = total
        self.count = _CHECKED[key]

    def read(self, start: int, stop: int) -> Feeds:
        """Samples [start, stop) of every input, in the input's dtype."""
        stop = min(stop, self.count)
        return {name: np.ascontiguousarray(self.arrays[name][start:stop], dtype=self.dtypes[name])
                for name, _ in self.specs}

    def batch_size(self, wanted: int) -> int:
        """`wanted`, or the model's static batch size (which must divide the sample count)."""
        static = {d[0] for _, d in self.specs if d and isinstance(d[0], int) and d[0] > 0}
        if not static:
            return wanted
        batch = static.pop()
        if self.count % batch:
            raise OnnxPruneError(f"{self.count} samples do not fill batches of the model's static batch size {batch}")
        return batch

    def batches(self, batch: int) -> Iterator[Feeds]:
        """Consecutive batches (a static batch dim sets the batch size); checked before the first is read."""
        batch = self.batch_size(batch)
        return (self.read(start, start + batch) for start in range(0, self.count, batch))


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
    p = Path(path)
    arrays = (_lazy(p) if p.is_file() else None) or raw_arrays(path)  # an uncompressed file is hashed in pieces
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        if isinstance(a, _Stored):
            h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
            step = max(1, (16 << 20) // max(a.row * a.dtype.itemsize, 1))
            for start in range(0, len(a), step):
                h.update(a[start:start + step].data)
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.data)
    return {"sha256": h.hexdigest(),
            "arrays": {k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in sorted(arrays)}}
