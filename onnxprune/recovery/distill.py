"""Recovery by block-wise distillation: tune the pruned model's weights to reproduce the original.

Block by block (see blocks.py), the pruned model runs from its own values at the block's start cut
(computed with the blocks already recovered) and learns, with Adam on a loss (losses.py: the mean
squared error, normalised per feature or not, or the cosine), the original's values at the block's end
cut on unlabeled calibration samples; then, if asked, every weight at once on the final outputs. A
held-out share of the samples guards every step: weights that do not lower its error are thrown away.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxPruneError
from ..runtime.feeds import check_data
from .blocks import Block, Layout, find_blocks, graph_inputs, layout, static_batch
from .losses import LOSSES, feature_moments, feature_weights, loss_sum, masked_sse
from .torch_graph import NO_TORCH, TorchGraph, torch

__all__ = ["Block", "RecoverOptions", "find_blocks", "masked_sse", "recover"]

RECOVERED, RESTORED, UNTRAINED = "recovered", "original weights (held-out error rose)", "nothing to train"
END_TO_END = "end to end"


@dataclass
class RecoverOptions:
    """How recovery trains."""

    epochs: int = 8  # passes over the training samples per block
    lr: float = 1e-3  # Adam learning rate
    end_to_end: int = 0  # extra epochs on the final outputs after the blocks (0: none)
    loss: str = "mse"  # of the blocks: mse, normalized (per-feature variance), cosine (losses.LOSSES)
    end_to_end_loss: str = "cosine"  # of the end-to-end pass on the final outputs
    end_to_end_lr: float | None = None  # its Adam learning rate (None: lr)
    batch: int = 16
    hold_out: float = 0.2  # share of the samples held out for the never-worse guard (at least 1 sample)
    seed: int = 0
    mask: str | None = None  # name of the input whose zeros mark padding positions (attention_mask)
    device: str = "auto"  # auto: cuda when torch sees one, else cpu
    threads: int | None = None  # torch CPU threads


@dataclass
class _Stage:
    """What one training step fits: stored tensors fed, targets, the weights it moves."""

    name: str
    inputs: list[str]
    outputs: list[str]
    params: list[str]
    loss: str = "mse"


class _Samples:
    """The samples in runs (one sample, or the static batch), their stored tensors and targets on the CPU."""

    def __init__(self, arrays: dict[str, np.ndarray], lay: Layout, mask: str | None) -> None:
        """Group the graph inputs' arrays as the model runs them."""
        self.batched, self.group, self.mask_name = lay.batched, lay.group, mask
        first = next(iter(arrays.values()))
        self.groups = len(first) // lay.group
        self.values = {k: torch.from_numpy(np.ascontiguousarray(a).reshape(self.groups, lay.group, *a.shape[1:]))
                       for k, a in arrays.items()}
        self.dtypes: dict[str, torch.dtype] = {}  # a stored tensor's type in the model (kept as float32)
        self.targets: dict[str, torch.Tensor] = {}
        self.weights: dict[str, torch.Tensor] = {}  # 1 / each target feature's variance (the normalized loss)
        self.length = arrays[mask].shape[-1] if mask is not None else 0  # positions per sample
        self.trim = False  # run each pass on the positions up to its last real one only (see _trimmable)
        self.axes: dict[str, list[int]] = {k: [1] for k, a in arrays.items()  # position axes of each tensor
                                           if mask is not None and a.shape[:2] == arrays[mask].shape}

    def span(self, idx: torch.Tensor) -> int:
        """Positions up to the last real one among the runs `idx` (all of them when not trimming)."""
        if not self.trim:
            return self.length
        real = (self.values[self.mask_name][idx].reshape(-1, self.length) != 0).any(0).nonzero()
        return int(real[-1]) + 1 if len(real) else 1

    def take(self, table: dict[str, torch.Tensor], name: str, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The runs `idx` of one tensor, shaped as the model computes it for them (stored ones in its type),
        cut to the runs' span of positions when trimming."""
        part = table[name][idx]
        part = part.reshape(-1, *part.shape[2:]) if self.batched else part[0]
        if self.trim and name in self.axes:
            span = self.span(idx)
            part = part[tuple(slice(0, span) if a in self.axes[name] else slice(None) for a in range(part.dim()))]
        dtype = self.dtypes.get(name, part.dtype) if table is self.values else part.dtype
        return part.to(device, dtype)

    def feeds(self, names: list[str], idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Inputs for a run: the stored tensors named."""
        return {n: self.take(self.values, n, idx, device) for n in names}

    def mask(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """The padding mask of the runs, if there is one."""
        return None if self.mask_name is None else self.take(self.values, self.mask_name, idx, device)

    def store(self, table: dict[str, torch.Tensor], name: str, pieces: list[torch.Tensor],
              back: torch.Tensor) -> None:
        """Keep a tensor computed run by run, in the order `back` puts the pieces' runs in (floats as float32)."""
        value = torch.cat(pieces)[back]
        if value.is_floating_point():
            if table is self.values:
                self.dtypes[name] = value.dtype
            value = value.float()
        table[name] = value

    def back(self, value: torch.Tensor, runs: int, name: str, span: int) -> torch.Tensor:
        """A computed tensor reshaped to [runs, per-run ...] on the CPU (positions cut to `span` padded back)."""
        value = value.detach().cpu()
        for axis in self.axes.get(name, []) if self.trim and span < self.length else []:
            pad = list(value.shape)
            pad[axis] = self.length - span
            value = torch.cat([value, value.new_zeros(pad)], axis)
        return value.reshape(runs, value.shape[0] // runs, *value.shape[1:]) if self.batched else value.unsqueeze(0)

    def by_length(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The runs `idx` (shuffled if a generator is given), then, when trimming, sorted by their real length
        (a stable sort: equal lengths keep the shuffled order), so that a pass over neighbours pads little."""
        order = idx if generator is None else idx[torch.randperm(len(idx), generator=generator)]
        if not self.trim:
            return order
        real = (self.values[self.mask_name][order].reshape(len(order), -1, self.length) != 0).any(1)
        last = (real.int() * torch.arange(1, self.length + 1)).amax(1)
        return order[torch.sort(last, stable=True).indices]

    def steps(self, idx: torch.Tensor, size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The training runs `idx` in mini-batches of `size` runs, in a random order; when trimming, each
        mini-batch holds runs of about the same length (fewer padded positions computed)."""
        order = self.by_length(idx, generator)
        steps = [order[i:i + size] for i in range(0, len(order), size)]
        return [steps[int(k)] for k in torch.randperm(len(steps), generator=generator)] if self.trim else steps

    def chunks(self, idx: torch.Tensor, batch: int) -> list[torch.Tensor]:
        """The runs in forward passes: `batch` samples at once when batches vary, else one run each."""
        size = batch if self.batched else 1
        return [idx[i:i + size] for i in range(0, len(idx), size)]


def _device(choice: str) -> torch.device:
    """The torch device to train on."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise OnnxPruneError(f"unknown recovery device '{choice}' (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise OnnxPruneError(f"recovery runs on cpu or cuda, not '{choice}'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OnnxPruneError("recovery device cuda: PyTorch sees no CUDA device")
    return device


def _arrays(model: onnx.ModelProto, arrays: dict[str, np.ndarray], mask: str | None) -> dict[str, np.ndarray]:
    """The graph inputs' arrays, checked and in the types the model declares."""
    inputs = graph_inputs(model)
    specs = [(v.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
              if v.type.tensor_type.HasField("shape") else None) for v in inputs]
    dtypes = {v.name: np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)) for v in inputs}
    check_data(arrays, specs, dtypes)
    if mask is not None and mask not in dtypes:
        raise OnnxPruneError(f"mask '{mask}' is not an input of the model (inputs: {', '.join(dtypes)})")
    if mask is not None and np.ndim(arrays[mask]) != 2:
        raise OnnxPruneError(f"mask '{mask}' must be [samples, positions], got {list(np.shape(arrays[mask]))}")
    return {k: np.asarray(arrays[k], dtype=dtypes[k]) for k in dtypes}


def _split(groups: int, options: RecoverOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded training and held-out run indices (at least one held out, at least one trained on)."""
    held = min(max(1, round(options.hold_out * groups)), groups - 1)
    order = torch.from_numpy(np.random.default_rng(options.seed).permutation(groups))
    return order[held:].sort().values, order[:held].sort().values


def _compute(graph: TorchGraph, data: _Samples, fed: list[str], names: list[str], table: dict,
             device: torch.device, batch: int) -> None:
    """Run the graph over every run and keep the named tensors in `table`."""
    if not names:
        return
    pieces: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    order = data.by_length(torch.arange(data.groups))  # passes over runs of about the same length
    with torch.no_grad():
        for idx in data.chunks(order, batch):
            out = graph(data.feeds(fed, idx, device), names)
            for n in names:
                pieces[n].append(data.back(out[n], len(idx), n, data.span(idx)))
    for n in names:
        data.store(table, n, pieces[n], torch.argsort(order))


def _trimmable(graph: TorchGraph, data: _Samples, names: list[str], device: torch.device) -> bool:
    """Whether running only the positions up to the last real one leaves every named tensor as it was on them
    (padding at the end, read by no real position), tried on the first runs that have padding; records each
    tensor's position axes (those that followed the inputs' length) in data.axes."""
    if not data.batched or data.mask_name is None:
        return False
    mask = data.values[data.mask_name].reshape(data.groups, -1)
    padded = torch.nonzero(mask[:, -1] == 0).flatten()[:4]
    if not len(padded):
        return False
    fed = list(graph.graph_inputs)
    with torch.no_grad():
        full = graph(data.feeds(fed, padded, device), names)
        data.trim = True
        try:
            span, short = data.span(padded), graph(data.feeds(fed, padded, device), names)
        except (OnnxPruneError, RuntimeError):  # a fixed length somewhere: the model runs whole
            return False
        finally:
            data.trim = False
    found = {n: _position_axes(full[n], short[n], data.length, span) for n in names}
    if span >= data.length or any(axes is None for axes in found.values()):
        return False
    data.axes.update({n: axes for n, axes in found.items() if axes})
    return True


def _position_axes(full: torch.Tensor, short: torch.Tensor, length: int, span: int) -> list[int] | None:
    """The axes where the full run had `length` positions and the trimmed one `span`, if the trimmed values
    equal the full ones on those first positions (1e-4 of the scale); None if they do not."""
    if full.dim() != short.dim():
        return None
    axes = [a for a, (f, s) in enumerate(zip(full.shape, short.shape)) if f != s]
    if any(full.shape[a] != length or short.shape[a] != span for a in axes):
        return None
    full = full[tuple(slice(0, span) if a in axes else slice(None) for a in range(full.dim()))]
    if not full.is_floating_point():
        return axes if torch.equal(full, short) else None
    scale = float(full.abs().max()) if full.numel() else 0.0
    return axes if torch.allclose(full.float(), short.float(), rtol=0, atol=1e-4 * scale + 1e-7) else None


def _weigh(data: _Samples, names: list[str], train: torch.Tensor, batch: int) -> None:
    """1 / each feature's variance of the targets named, over the training runs' real positions."""
    for name in [n for n in names if n not in data.weights]:
        moments = sum(feature_moments(data.take(data.targets, name, idx, torch.device("cpu")),
                                      data.mask(idx, torch.device("cpu"))) for idx in data.chunks(train, batch))
        data.weights[name] = feature_weights(moments)


def _loss(student: TorchGraph, stage: _Stage, data: _Samples, idx: torch.Tensor,
          device: torch.device) -> tuple[torch.Tensor, int]:
    """The stage's summed loss over the runs `idx`, and its count (elements or positions)."""
    out = student(data.feeds(stage.inputs, idx, device), stage.outputs)
    mask = data.mask(idx, device)
    parts = [loss_sum(stage.loss, out[n], data.take(data.targets, n, idx, device), mask, data.weights.get(n))
             for n in stage.outputs]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _mean_loss(student: TorchGraph, stage: _Stage, data: _Samples, idx: torch.Tensor, device: torch.device,
         batch: int) -> float:
    """The stage's mean loss over the runs `idx`."""
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in data.chunks(data.by_length(idx), batch):
            sse, n = _loss(student, stage, data, chunk, device)
            total, count = total + float(sse), count + n
    return total / count if count else 0.0


def _fit(student: TorchGraph, params: list, stage: _Stage, data: _Samples, train: torch.Tensor,
         options: RecoverOptions, epochs: int, device: torch.device, generator: torch.Generator,
         progress: Callable[[str], None]) -> None:
    """Adam on the stage's loss: `epochs` passes over the training runs in mini-batches of `batch` samples;
    a progress line after each epoch of the end-to-end pass (minutes long on thousands of samples)."""
    start, report = time.perf_counter(), stage.name == END_TO_END
    lr = options.end_to_end_lr if stage.name == END_TO_END and options.end_to_end_lr else options.lr
    optimizer = torch.optim.Adam(params, lr=lr)
    step = options.batch if data.batched else max(1, options.batch // data.group)  # runs per Adam step
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for runs in data.steps(train, step, generator):
            optimizer.zero_grad(set_to_none=True)
            count = 0
            for idx in data.chunks(runs, options.batch):
                sse, n = _loss(student, stage, data, idx, device)
                if n:
                    sse.backward()
                count += n
                if report:  # a value read back from the device per pass: only where a line says it
                    total += float(sse.detach())
            if count:
                for p in params:
                    if p.grad is not None:
                        p.grad /= count  # the mean over the whole mini-batch, however many passes it took
                optimizer.step()
            seen += count
        if report:
            left = (time.perf_counter() - start) / epoch * (epochs - epoch)
            progress(f"end to end: epoch {epoch}/{epochs}, training {stage.loss} loss {total / max(seen, 1):.4g}"
                     + (f", about {left / 60:.0f} min left" if epoch < epochs else ""))


def _run_stage(student: TorchGraph, stage: _Stage, data: _Samples, split: tuple[torch.Tensor, torch.Tensor],
               options: RecoverOptions, epochs: int, device: torch.device, generator: torch.Generator,
               progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train one stage; keep the new weights only when the held-out error went down."""
    start = time.perf_counter()
    params = student.trainable(stage.params)
    train, held = split
    if stage.loss == "normalized":
        _weigh(data, stage.outputs, train, options.batch)

    def errors() -> tuple[float, float]:
        return (_mean_loss(student, stage, data, train, device, options.batch),
                _mean_loss(student, stage, data, held, device, options.batch))

    train_before, held_before = errors()
    snapshot = {k: p.detach().clone() for k, p in params.items()}
    if params and epochs > 0:
        _fit(student, list(params.values()), stage, data, train, options, epochs, device, generator, progress)
    train_after, held_after = errors()
    kept = RECOVERED if held_after < held_before else RESTORED if params and epochs > 0 else UNTRAINED
    if kept != RECOVERED:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(snapshot[k])
    student.trainable([])
    return {"params": len(params), "values": sum(p.numel() for p in params.values()), "loss": stage.loss,
            "train_loss_before": train_before, "train_loss_after": train_after,
            "held_out_loss_before": held_before, "held_out_loss_after": held_after, "kept": kept,
            "seconds": round(time.perf_counter() - start, 3)}


def _line(head: str, rec: dict) -> str:
    """A progress line for a stage."""
    note = "" if rec["kept"] == RECOVERED else f", {rec['kept']}"
    return f"{head}: held-out {rec['loss']} loss {rec['held_out_loss_before']:.3g} -> {rec['held_out_loss_after']:.3g}{note}"


def _check(options: RecoverOptions) -> None:
    """One-line errors for options recovery cannot train with."""
    if options.epochs < 0 or options.end_to_end < 0:
        raise OnnxPruneError("recovery epochs must be 0 or more")
    if options.epochs == 0 and options.end_to_end == 0:
        raise OnnxPruneError("recovery with 0 epochs per block and no end-to-end pass would train nothing "
                             "(give --recover-end-to-end N)")
    if options.batch < 1:
        raise OnnxPruneError(f"recovery batch must be at least 1, got {options.batch}")
    if not options.lr > 0 or (options.end_to_end_lr is not None and not options.end_to_end_lr > 0):
        raise OnnxPruneError(f"recovery learning rate must be positive, got {options.lr}")
    for given in (options.loss, options.end_to_end_loss):
        if given not in LOSSES:
            raise OnnxPruneError(f"unknown recovery loss '{given}' ({', '.join(LOSSES)})")
    if not 0 <= options.hold_out < 1:
        raise OnnxPruneError(f"recovery hold-out share must be in [0, 1), got {options.hold_out}")
    if options.threads is not None and options.threads < 1:
        raise OnnxPruneError(f"recovery threads must be at least 1, got {options.threads}")


def _blocks_pass(student: TorchGraph, blocks: list[Block], data: _Samples, split, options: RecoverOptions,
                 device: torch.device, progress: Callable[[str], None]) -> list[dict]:
    """Recover the blocks in order, each from the pruned model's values at its start cut."""
    fed = list(student.graph_inputs)
    generator = torch.Generator().manual_seed(options.seed)
    records = []
    for k, block in enumerate(blocks, 1):
        stored = [t for t in block.inputs if t not in block.fixed]
        stage = _Stage(block.name, fed + stored, block.outputs, block.params, options.loss)
        rec = _run_stage(student, stage, data, split, options, options.epochs, device, generator)
        records.append({"name": block.name, "inputs": block.inputs, "outputs": block.outputs,
                        "params": rec.pop("params"), "nodes": block.nodes, **rec})
        progress(_line(f"group {k}/{len(blocks)} block {block.name}", rec))
        after = blocks[k] if k < len(blocks) else None
        wanted = [] if after is None else [t for t in after.inputs if t not in after.fixed]
        _compute(student, data, fed + stored, [t for t in wanted if t not in data.values], data.values, device,
                 options.batch)
        for name in [t for t in stored if t not in wanted]:
            del data.values[name]
    return records


def _end_to_end(student: TorchGraph, trainable: list[str], data: _Samples, split, options: RecoverOptions,
                device: torch.device, progress: Callable[[str], None]) -> dict:
    """Train every weight recovery tunes on the final outputs, under the same held-out guard."""
    outputs = [t for t in student.graph_outputs if t in data.targets]
    stage = _Stage(END_TO_END, list(student.graph_inputs), outputs, trainable, options.end_to_end_loss)
    generator = torch.Generator().manual_seed(options.seed + 1)
    rec = _run_stage(student, stage, data, split, options, options.end_to_end, device, generator, progress)
    progress(_line("end to end", rec))
    return {"outputs": outputs, **rec, "epochs": options.end_to_end}


def _checked_arrays(original: onnx.ModelProto, pruned: onnx.ModelProto, arrays: dict[str, np.ndarray],
                   options: RecoverOptions) -> dict[str, np.ndarray]:
    """The samples, checked against both models and counted before anything runs."""
    arrays = _arrays(pruned, arrays, options.mask)
    missing = [v.name for v in graph_inputs(original) if v.name not in arrays]
    if missing:
        raise OnnxPruneError(f"the original model's input '{missing[0]}' is not an input of the pruned model")
    n, group = len(next(iter(arrays.values()))), static_batch(pruned) or 1
    if n % group:
        raise OnnxPruneError(f"{n} samples do not fill batches of the model's static batch size {group}")
    if n < 2 * group:
        runs = "samples" if group == 1 else f"batches of the model's static batch size {group}"
        raise OnnxPruneError(f"recovery needs at least 2 {runs} (one is held out), got {n} samples")
    return arrays


def recover(original: onnx.ModelProto, pruned: onnx.ModelProto, arrays: dict[str, np.ndarray],
            options: RecoverOptions | None = None, progress: Callable[[str], None] = lambda _: None
            ) -> tuple[onnx.ModelProto, dict]:
    """Tune the pruned model's weights to reproduce the original on the samples; (model, record).

    The model differs from `pruned` in initializer values only; the record (JSON-serialisable)
    holds each block's errors before and after and whether its new weights were kept.
    """
    options = options or RecoverOptions()
    _check(options)
    if torch is None:
        raise OnnxPruneError(NO_TORCH)
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _recover(original, pruned, arrays, options, progress)
    finally:
        torch.set_num_threads(threads)


def _recover(original: onnx.ModelProto, pruned: onnx.ModelProto, arrays: dict[str, np.ndarray],
             options: RecoverOptions, progress: Callable[[str], None]) -> tuple[onnx.ModelProto, dict]:
    """recover, with the thread count set."""
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    device = _device(options.device)
    arrays = _checked_arrays(original, pruned, arrays, options)
    teacher, student = TorchGraph(original), TorchGraph(pruned)
    lay = layout(original, pruned, arrays, (teacher, student))
    data = _Samples(arrays, lay, options.mask)
    split = _split(data.groups, options)
    checked = list(dict.fromkeys([t for b in lay.blocks for t in b.outputs + b.inputs if t not in b.fixed]
                                 + list(student.graph_outputs)))
    data.trim = _trimmable(student.to(device), data, checked, device) and \
        _trimmable(teacher.to(device), data, checked, device)
    progress(f"recover: {len(lay.blocks)} blocks on {device.type}, {len(split[0]) * lay.group} training and "
             f"{len(split[1]) * lay.group} held-out samples")
    targets = list(dict.fromkeys(t for b in lay.blocks for t in b.outputs))
    if options.epochs == 0:  # end to end only: the blocks' cuts are neither trained nor kept (memory)
        targets = [t for t in targets if t in student.graph_outputs]
    _compute(teacher.to(device), data, list(teacher.graph_inputs), targets, data.targets, device, options.batch)
    del teacher  # the original's weights are not needed any more
    student.to(device)
    blocks = _blocks_pass(student, lay.blocks, data, split, options, device, progress) if options.epochs else []
    e2e = _end_to_end(student, lay.trainable, data, split, options, device, progress) \
        if options.end_to_end > 0 and lay.blocks else None
    mask = arrays.get(options.mask) if options.mask else None
    record = {"blocks": blocks, "end_to_end": e2e,
              "samples": {"train": len(split[0]) * lay.group, "held_out": len(split[1]) * lay.group},
              "options": asdict(options), "device": str(device),
              "masked_positions": None if mask is None else float(np.mean(mask == 0)),
              "trimmed_padding": data.trim,
              "seconds": round(time.perf_counter() - start, 3)}
    return student.write_back(pruned), record
