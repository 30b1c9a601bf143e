"""The model being pruned, run over the calibration set one segment at a time, its values kept on disk.

Reconstruction takes the groups in graph order and needs each group's consumer inputs in the model
as pruned so far. Running the model from its inputs for every group costs one pass per group; here a
step runs only the nodes between tensors already computed (and still valid: no node before them has
changed since) and the tensors the step needs. What later steps will read from the segment is written
to files, one per tensor, samples in order, and read back a batch at a time: memory holds one batch.
A tensor is dropped once a node it depends on changes (`changed`), or once no later step needs it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..loading import Prepared
from ..runtime.feeds import session_inputs
from ..runtime.providers import open_session
from .capture import Captured, capture_model
from .data import Calibration, Samples

BATCH_BYTES = 48 << 20  # a segment's outputs per batch, at most (about): sets the batch size


@dataclass
class _Stored:
    path: str
    dtype: np.dtype
    shape: tuple[int, ...]  # one sample's

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(start * self.sample_bytes)
            out = np.fromfile(f, self.dtype, (stop - start) * (self.sample_bytes // self.dtype.itemsize))
        return out.reshape((stop - start,) + self.shape)


class Activations:
    """Steps in order, each reading its tensors of prep.graph as it is then (`read`), then telling which
    nodes it changed (`changed`). `steps`: the tensors each step will read, in order (what is worth keeping)."""

    def __init__(self, prep: Prepared, cal: Calibration, steps: list[list[str]], provider: str = "auto",
                 directory: str | None = None):
        self.prep, self.cal, self.provider = prep, cal, provider
        self.steps, self.step = steps, 0
        self.dir = tempfile.mkdtemp(prefix="onnxprune-activations-", dir=directory)
        self.stored: dict[str, _Stored] = {}
        self.bytes_max = 0  # on disk at most
        nodes = prep.graph.nodes
        self.producer: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for t in n.outputs:
                self.producer[t.name] = i
            for t in n.inputs:
                if t.name and not isinstance(t, gs.Constant):
                    self.readers.setdefault(t.name, []).append(i)
        names = {t.name for t in prep.graph.inputs}
        self.variable = set(names)  # tensors that depend on a model input (worth keeping per sample)
        for n in nodes:
            if any(t.name in self.variable for t in n.inputs):
                self.variable.update(t.name for t in n.outputs)
        self.sample_bytes: dict[str, int] = {}  # seen so far, for the batch size
        self._count: int | None = None
        self._files = 0

    def close(self) -> None:
        """Delete the stored activations."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.stored.clear()

    def __enter__(self) -> "Activations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ancestors(self, tensors, stop: set[str]) -> set[int]:
        """Nodes that compute `tensors`, not going past the tensors in `stop`."""
        seen: set[int] = set()
        todo = [t for t in tensors if t not in stop]
        while todo:
            i = self.producer.get(todo.pop())
            if i is None or i in seen:
                continue
            seen.add(i)
            todo.extend(t.name for t in self.prep.graph.nodes[i].inputs if t.name and t.name not in stop)
        return seen

    def _later(self, first: int, stop: set[str] | None = None) -> set[int]:
        """Nodes that steps from `first` on run, if what is stored (`stop`) stays valid."""
        return self._ancestors({t for s in self.steps[first:] for t in s}, stop or set())

    def read(self, tensors: list[str], new_bias: dict[int, np.ndarray] | None = None) -> tuple[Captured, int]:
        """This step's tensors for each batch of calibration samples (one batch held at a time), and the count."""
        nodes = self.prep.graph.nodes
        have = set(self.stored)
        segment = self._ancestors(tensors, have)
        later = self._later(self.step + 1)
        keep = [t for t in sorted({o.name for i in segment for o in nodes[i].outputs} | set(tensors))
                if t in self.variable and t not in self.stored
                and any(r in later and r not in segment for r in self.readers.get(t, ()))]
        given = {t: (s.dtype, s.shape) for t, s in self.stored.items()}
        outputs = list(dict.fromkeys(list(tensors) + keep))
        session = open_session(capture_model(self.prep, outputs, new_bias, given=given), self.provider).session
        specs, dtypes = session_inputs(session)
        model_inputs = [n for n, _ in specs if n not in given]
        from_disk = [n for n, _ in specs if n in given]
        samples = Samples(self.cal, [s for s in specs if s[0] in model_inputs], dtypes) if model_inputs else None
        count = samples.count if samples else self._sample_count()
        guess = 4 * max([self.stored[t].sample_bytes for t in from_disk]
                        + [int(np.prod(s[1:], dtype=np.int64)) * 4 for n, s in specs if n in model_inputs
                           and s and all(isinstance(d, int) for d in s[1:])] + [1 << 20])
        per_sample = sum(self.sample_bytes.get(t, guess) for t in outputs)
        batch = max(1, min(self.cal.batch, BATCH_BYTES // max(per_sample, 1)))
        if samples:
            batch = samples.batch_size(batch)
        files = {}
        for t in keep:
            self._files += 1
            files[t] = open(os.path.join(self.dir, f"{self._files}.bin"), "wb")
        shapes: dict[str, tuple] = {}

        def run() -> Captured:
            try:
                for start in range(0, count, batch):
                    stop = min(start + batch, count)
                    feeds = samples.read(start, stop) if samples else {}
                    feeds.update({t: self.stored[t].read(start, stop) for t in from_disk})
                    values = dict(zip(outputs, session.run(outputs, feeds)))
                    for t, v in values.items():
                        self.sample_bytes[t] = v.nbytes // max(stop - start, 1)
                    for t, f in list(files.items()):
                        v = values[t]
                        if v.ndim and v.shape[0] == stop - start and shapes.setdefault(t, v.shape[1:]) == v.shape[1:] \
                                and np.issubdtype(v.dtype, np.floating):
                            f.write(np.ascontiguousarray(v).data)
                        else:  # not per sample (a shape, say): recomputed when needed instead
                            f.close()
                            os.unlink(f.name)
                            del files[t]
                    yield start, {t: values[t] for t in tensors}
                for t, f in files.items():
                    f.close()
                    self.stored[t] = _Stored(f.name, values[t].dtype, shapes[t])
                files.clear()
                self.bytes_max = max(self.bytes_max, sum(s.sample_bytes for s in self.stored.values()) * count)
            finally:
                for f in files.values():
                    f.close()
                    os.unlink(f.name)
        self._count = count
        return run(), count

    def _sample_count(self) -> int:
        if self._count is None:
            name = self.prep.graph.inputs[0].name
            session = open_session(capture_model(self.prep, [name]), self.provider).session
            self._count = Samples(self.cal, *session_inputs(session)).count
        return self._count

    def changed(self, nodes: list[gs.Node]) -> None:
        """These nodes of prep.graph changed: forget what depends on them; then go to the next step."""
        index = {id(n): i for i, n in enumerate(self.prep.graph.nodes)}
        todo = [index[id(n)] for n in nodes]
        stale: set[str] = set()
        seen: set[int] = set()
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            for t in self.prep.graph.nodes[i].outputs:
                stale.add(t.name)
                todo.extend(self.readers.get(t.name, ()))
        self.step += 1
        for t in [t for t in self.stored if t in stale]:
            os.unlink(self.stored.pop(t).path)
        later = self._later(self.step, set(self.stored))  # what the next steps would run from what is kept
        for t in list(self.stored):
            if not any(r in later for r in self.readers.get(t, ())):
                os.unlink(self.stored.pop(t).path)
