"""Channel pruning by LASSO selection and least-squares reconstruction (He et al., ICCV 2017).

Groups are taken in graph order. For each, every consumer's input is read at sampled output
positions from the model pruned so far (earlier groups' removals and re-fits applied), and its
target is the original model's output there, minus the bias. From these rows only sufficient
statistics are kept ([X 1]^T [X 1], [X 1]^T Y, |Y|^2), so memory does not grow with the calibration
set. The LASSO picks the channels (jointly over all consumers of the group), then each consumer is
re-fit on what is left by least squares, with the intercept going into its bias.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs
import scipy.linalg
import scipy.sparse

from ..analysis.analyze import Analysis
from ..analysis.builder import CONSUMER, Member
from ..analysis.groups import Group
from ..calibration.capture import capture_model
from ..calibration.consumers import LinearView, linear_view
from ..calibration.data import POINTS, Calibration, Samples
from ..calibration.frontier import BATCH_BYTES, Activations
from ..runtime.feeds import session_inputs
from ..runtime.providers import open_session
from ..errors import OnnxPruneError
from ..loading import Prepared
from ..scoring.slices import zeroed
from ..selection.lasso import lasso_keep
from .merging import Compensation, MergeOptions, add_bias, own_constant

MAX_FEATURES = 8192  # [features+1]^2 float64 statistics per consumer: 512 MiB at this size
RCOND = 1e-10  # eigenvalues of the statistics below this share of the largest count as zero
HOLD_OUT = 5  # every 5th calibration sample is held out: it picks the ridge and measures the errors
RIDGE = (0.0, 1e-6, 1e-4, 1e-2, 1e-1, 1.0)  # ridge strengths tried, as shares of the mean eigenvalue
GATHER_BYTES = 1 << 20  # a consumer's rows gathered over batches (float32) before one product with them


@dataclass
class Moments:
    """Sums over calibration rows of [X 1]^T [X 1], [X 1]^T Y and |Y|^2, in float64."""

    xx: np.ndarray
    xy: np.ndarray
    yy: float = 0.0

    @classmethod
    def zeros(cls, features: int, outputs: int) -> "Moments":
        return cls(np.zeros((features + 1, features + 1)), np.zeros((features + 1, outputs)))

    @property
    def rows(self) -> int:
        return int(round(self.xx[-1, -1]))

    @property
    def nbytes(self) -> int:
        return self.xx.nbytes + self.xy.nbytes

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.xx + other.xx, self.xy + other.xy, self.yy + other.yy)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x1 = np.empty((len(x), x.shape[1] + 1))
        x1[:, :-1], x1[:, -1] = x, 1.0
        y = np.asarray(y, np.float64)
        self.xx += x1.T @ x1
        self.xy += x1.T @ y
        self.yy += float(np.einsum("ij,ij->", y, y))

    def centered(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Covariance-style statistics (the intercept taken out): X^T X, X^T Y and |Y|^2 about the means."""
        n = max(self.xx[-1, -1], 1.0)
        sx, sy = self.xx[:-1, -1], self.xy[-1]
        return (self.xx[:-1, :-1] - np.outer(sx, sx) / n, self.xy[:-1] - np.outer(sx, sy) / n,
                self.yy - float(sy @ sy) / n)

    def on(self, keep: np.ndarray) -> "Moments":
        """The statistics of the columns `keep` only (the last index is the constant column)."""
        return Moments(self.xx[np.ix_(keep, keep)], self.xy[keep], self.yy)

    def error(self, theta: np.ndarray) -> float:
        """|Y - [X 1] theta|^2 from the statistics alone."""
        return self.yy - 2 * float(np.einsum("ij,ij->", theta, self.xy)) + float(
            np.einsum("ij,ij->", theta, self.xx @ theta))


@dataclass
class ConsumerFit:
    """How well one consumer reproduces its original output on the calibration rows."""

    node: str
    rows: int
    held_out: int  # rows the errors are measured on (0: measured on the fitted rows)
    features: int
    error_before: float  # relative L2 error with the channels removed and the weights unchanged
    error_after: float | None = None  # after the re-fit
    ridge: float | None = None  # chosen on the held-out rows (None: the re-fit did not help there)

    def to_json(self) -> dict:
        out = {"node": self.node, "rows": self.rows, "held_out_rows": self.held_out, "features": self.features,
               "error_before": round(self.error_before, 6)}
        if self.error_after is not None:
            out["error_after"] = round(self.error_after, 6)
            out["ridge"] = self.ridge if self.ridge is not None else "no re-fit (it did not help on held-out rows)"
        return out


@dataclass
class GroupFit:
    """What reconstruction did for one group."""

    selection: str  # "lasso", or the criterion that chose the channels
    fits: list[ConsumerFit] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # consumer -> why it has no fit
    note: str | None = None

    def to_json(self) -> dict:
        out: dict = {"selection": self.selection, "consumers": [f.to_json() for f in self.fits]}
        if len(self.fits) > 1:
            out["solved"] = "jointly over all consumers" if self.selection == "lasso" else "each consumer"
        if self.skipped:
            out["not_reconstructed"] = self.skipped
        if self.note:
            out["note"] = self.note
        return out


class _Gather:
    """A consumer's rows, gathered over consecutive batches and handed to `emit(start, stop, rows)` (samples
    [start, stop)) once about GATHER_BYTES are held: a few large products instead of one per batch, each of
    which rewrites its whole [features+1]^2 (or outputs) result."""

    def __init__(self, features: int, emit: Callable[[int, int, np.ndarray], None]):
        self.limit, self.emit = max(1, GATHER_BYTES // (4 * max(features, 1))), emit
        self.start, self.stop, self.blocks, self.rows = 0, 0, [], 0

    def add(self, start: int, stop: int, rows: np.ndarray) -> None:
        """Rows of samples [start, stop), following those already held."""
        if not self.blocks:
            self.start = start
        self.stop = stop
        self.blocks.append(rows)
        self.rows += len(rows)
        if self.rows >= self.limit:
            self.flush()

    def flush(self) -> None:
        """Hand on what is held."""
        if self.blocks:
            rows = self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)
            self.blocks, self.rows = [], 0
            self.emit(self.start, self.stop, rows)


@dataclass
class _Consumer:
    node: gs.Node
    member: Member
    view: LinearView | None
    why: str | None  # no view: the reason
    where: np.ndarray | None = None  # [samples, points] sampled output positions
    targets: np.ndarray | None = None  # original outputs minus bias, [samples * rows per sample, outputs]


def reconstruct(prep: Prepared, analysis: Analysis, removed: dict[str, list[int]], cal: Calibration,
                options: MergeOptions, choose: bool, selected_by: str = "l1", provider: str = "auto",
                progress: Callable[[str], None] | None = None) -> tuple[dict[str, list[int]], Compensation]:
    """Take the groups in graph order: choose channels by LASSO (if `choose`; as many as `removed` says,
    else exactly those), re-fit the consumers (if options.compensate is "reconstruct"); returns the
    removed channels and the compensation (weights already changed in prep.graph)."""
    with _one_blas_thread():
        return _reconstruct(prep, analysis, removed, cal, options, choose, selected_by, provider, progress)


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread (where threadpoolctl, which scikit-learn brings, is there): the products and
    decompositions here are small, and BLAS threads that wait by spinning slowed them 10-40x when the
    cores were shared (with onnxruntime's threads, or other work)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _reconstruct(prep: Prepared, analysis: Analysis, removed: dict[str, list[int]], cal: Calibration,
                 options: MergeOptions, choose: bool, selected_by: str, provider: str,
                 progress: Callable[[str], None] | None) -> tuple[dict[str, list[int]], Compensation]:
    """The body of reconstruct, run with BLAS on one thread."""
    refit = options.compensate == "reconstruct"
    comp = Compensation(options)
    by_name = {prep.names[id(n)]: n for n in prep.graph.nodes}
    order = {prep.names[id(n)]: i for i, n in enumerate(prep.graph.nodes)}
    todo = [analysis.group(gid) for gid, r in removed.items() if r]
    consumers = {g.id: _consumers(g, by_name) for g in todo}
    todo.sort(key=lambda g: min((order[c.member.node] for c in consumers[g.id]), default=len(order)))
    memory = {"statistics_bytes_max": 0, "batch_bytes_max": 0, "target_bytes_max": 0}
    # edits replace weight arrays and never write into them, so these references stay the original model
    original = prep.graph.copy()
    first = {id(c): c.node.inputs[1].values for g in todo for c in consumers[g.id] if c.view}
    seeds = {key: i for i, key in enumerate(first)}
    done: dict[str, list[int]] = {}
    usable_all = [c for g in todo for c in consumers[g.id] if c.view]
    samples = _targets(prep, original, usable_all, cal, provider, memory, seeds, first) if usable_all else 0
    steps = [sorted({c.view.data for c in consumers[g.id] if c.view}) for g in todo]
    with Activations(prep, cal, steps, provider) as acts:
        for k, g in enumerate(todo, 1):
            usable = [c for c in consumers[g.id] if c.view]
            moments = _moments(acts, usable, samples, comp.new_bias, memory) if usable else {}
            fit = GroupFit("lasso" if choose and usable else selected_by)
            keep_n = g.channels - len(removed[g.id])
            if choose and usable:
                kept, fit.note = lasso_keep(*_lasso_problem(analysis, g, usable, moments, done), keep_n)
                done[g.id] = sorted(set(range(g.channels)) - set(kept.tolist()))
            else:
                done[g.id] = sorted(removed[g.id])
                if choose:
                    fit.note = f"no consumer could be read ({'; '.join(c.why for c in consumers[g.id])}): " \
                               f"channels chosen by {selected_by}"
            gone = analysis.removed_classes(done)
            for c in consumers[g.id]:
                _zero_removed(c.node, c.member, gone[analysis.resolution.cls[c.member.elements]])
                if c.view is None:
                    fit.skipped[c.member.node] = c.why
                    continue
                fit.fits.append(_refit(c, moments[c.member.node], gone, analysis, comp.new_bias, refit))
                c.targets = None  # done with
            acts.changed([c.node for c in consumers[g.id]])
            comp.outcomes[g.id] = fit
            if progress:
                errors = ", ".join(f"{f.error_before:.3f}" + (f" -> {f.error_after:.3f}" if f.error_after is not None
                                                            else "") for f in fit.fits)
                progress(f"group {k}/{len(todo)} {g.id}: kept {keep_n}/{g.channels} by {fit.selection}"
                         + (f"; consumer error {errors}" if errors else ""))
        memory["activation_disk_bytes_max"] = acts.bytes_max
    masked = memory.pop("masked_consumers", 0)
    comp.summary = {"calibration_samples": samples,
                    "points_per_sample": cal.points or ("the real positions" if masked else POINTS), **memory}
    if masked:
        comp.summary["masked_sequences"] = (f"{masked} consumers read sequences: rows at real (unmasked) positions "
                                            "only, " + (f"{cal.points} per sample" if cal.points else
                                                        "every one (repeated up to the padded length, so each "
                                                        "sample weighs the same)"))
    return done, comp


def _consumers(g: Group, by_name: dict[str, gs.Node]) -> list[_Consumer]:
    """The group's weight consumers with their linear views (or why not), each weight made private."""
    out = []
    for m in g.members:
        if m.role != CONSUMER or m.kind != "weight":
            continue
        node = by_name[m.node]
        view = linear_view(node, m)
        if isinstance(view, LinearView) and view.features > MAX_FEATURES:
            view = f"{view.features} input features (more than {MAX_FEATURES})"
        own_constant(node, 1)  # a weight shared with another node: this one gets its own copy
        out.append(_Consumer(node, m, view if isinstance(view, LinearView) else None,
                             None if isinstance(view, LinearView) else view))
    return out


def _targets(prep: Prepared, original: gs.Graph, consumers: list[_Consumer], cal: Calibration, provider: str,
             memory: dict[str, int], seeds: dict[int, int], first: dict[int, np.ndarray]) -> int:
    """Sample each consumer's output positions and keep the original model's outputs there (minus bias).

    One pass over the original graph, cut down to the consumers' inputs, for all groups at once: the
    first sample alone tells the size of a sample's tensors, the rest go in batches of about
    BATCH_BYTES; only the sampled rows' targets are kept.
    """
    tensors = sorted({c.view.data for c in consumers})
    session = open_session(capture_model(prep, tensors, source=original), provider).session
    data = Samples(cal, *session_inputs(session))
    samples = data.count
    mask = cal.mask_input(data.specs)
    gathered = {id(c): _Gather(c.view.features, _target_rows(c, c.view.matrix(first[id(c)]), samples))
                for c in consumers}
    rngs = {id(c): np.random.default_rng([cal.seed, seeds[id(c)]]) for c in consumers}
    start, batch = 0, data.batch_size(1)
    while start < samples:
        stop = min(start + batch, samples)
        feeds = data.read(start, stop)
        values = dict(zip(tensors, session.run(tensors, feeds)))
        valid = feeds[mask] != 0 if mask is not None else None
        size = sum(v.nbytes for v in values.values())
        memory["batch_bytes_max"] = max(memory["batch_bytes_max"], size)
        for c in consumers:
            x = values[c.view.data]
            if c.view.reads_sequence(x.shape, valid):  # rows at real positions only, drawn batch by batch
                drawn = c.view.sample_valid(valid, cal.points, rngs[id(c)])
                if c.where is None:
                    c.where = np.empty((samples, drawn.shape[1]), np.int64)
                c.where[start:stop] = drawn
                memory["masked_consumers"] = memory.get("masked_consumers", 0) + (start == 0)
            elif c.where is None:
                c.where = c.view.sample(x.shape, samples, cal.points or POINTS, rngs[id(c)])
            gathered[id(c)].add(start, stop, c.view.rows(x, c.where[start:stop]))
        del values
        if start == 0:
            batch = data.batch_size(max(1, min(cal.batch, BATCH_BYTES // max(size // (stop - start), 1))))
        start = stop
    for g in gathered.values():
        g.flush()
    memory["target_bytes_max"] = sum(c.targets.nbytes for c in consumers)
    return samples


def _target_rows(c: _Consumer, weight: np.ndarray, samples: int) -> Callable[[int, int, np.ndarray], None]:
    """What stores the targets of gathered rows: the rows times the original weight, as float32."""

    def emit(start: int, stop: int, rows: np.ndarray) -> None:
        y = (rows @ weight.T).astype(np.float32)
        per = len(y) // (stop - start)
        if c.targets is None:
            c.targets = np.empty((samples * per, y.shape[1]), np.float32)
        c.targets[start * per:stop * per] = y
    return emit


def _moments(acts: Activations, consumers: list[_Consumer], samples: int, new_bias: dict[int, np.ndarray],
             memory: dict[str, int]) -> dict[str, tuple[Moments, Moments]]:
    """Statistics of each consumer's rows in the model pruned so far against its targets: (fitted, held out)."""
    out = {c.member.node: (Moments.zeros(c.view.features, c.targets.shape[1]),
                           Moments.zeros(c.view.features, c.targets.shape[1])) for c in consumers}
    memory["statistics_bytes_max"] = max(memory["statistics_bytes_max"],
                                         sum(m.nbytes for pair in out.values() for m in pair))
    gathered = [(c, _Gather(c.view.features, _statistic_rows(c, out[c.member.node], samples))) for c in consumers]
    batches, _ = acts.read(sorted({c.view.data for c in consumers}), new_bias)
    for start, values in batches:
        memory["batch_bytes_max"] = max(memory["batch_bytes_max"], sum(v.nbytes for v in values.values()))
        for c, g in gathered:
            x = values[c.view.data]
            g.add(start, start + len(x), c.view.rows(x, c.where[start:start + len(x)]))
    for _, g in gathered:
        g.flush()
    return out


def _statistic_rows(c: _Consumer, moments: tuple[Moments, Moments], samples: int
                    ) -> Callable[[int, int, np.ndarray], None]:
    """What adds gathered rows against their targets to the statistics: every HOLD_OUT-th sample's to the held-out."""

    def emit(start: int, stop: int, rows: np.ndarray) -> None:
        per = len(rows) // (stop - start)
        y = c.targets[start * per:stop * per]
        sample = np.repeat(np.arange(start, stop), per)
        held = (sample % HOLD_OUT == HOLD_OUT - 1) & (samples >= HOLD_OUT)
        fit, check = moments
        fit.add(rows[~held], y[~held])
        if held.any():
            check.add(rows[held], y[held])
    return emit


def _group_features(analysis: Analysis, g: Group, c: _Consumer) -> tuple[np.ndarray, np.ndarray]:
    """The consumer's features that belong to the group, and the group channel of each."""
    pos, idx = analysis.channel_positions(c.member, g)
    k = c.view.kernel
    return (pos[:, None] * k + np.arange(k)).reshape(-1), np.repeat(idx, k)


def _lasso_problem(analysis: Analysis, g: Group, consumers: list[_Consumer], moments: dict[str, Moments],
                   done: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """(G, q, rows) of min |Y - sum_i beta_i Z_i|^2 over the group's channels, summed over consumers.

    Z_i is channel i's contribution X_i W_i^T; channels of other groups that the consumer still reads
    are held fixed on the target side. Each consumer's terms are scaled by its target energy so that
    consumers of different scale count alike.
    """
    gone = analysis.removed_classes(done)
    gram, xy, rows = np.zeros((g.channels, g.channels)), np.zeros(g.channels), 0
    for c in consumers:
        mom = moments[c.member.node][0] + moments[c.member.node][1]
        a, b, yy = mom.centered() if c.view.takes_bias() else (mom.xx[:-1, :-1], mom.xy[:-1], mom.yy)
        w = c.view.matrix()
        feats, chan = _group_features(analysis, g, c)
        alive = ~gone[analysis.resolution.cls[c.member.elements]][c.view.feature_positions()]
        alive[feats] = False
        other = np.nonzero(alive)[0]
        wg = w[:, feats]
        t = a[np.ix_(feats, feats)] * (wg.T @ wg)
        e = scipy.sparse.csr_matrix((np.ones(len(feats)), (chan, np.arange(len(feats)))),
                                    shape=(g.channels, len(feats)))
        v = np.einsum("fo,of->f", b[feats], wg) - (a[np.ix_(feats, other)] * (wg.T @ w[:, other])).sum(axis=1)
        scale = 1.0 / max(yy, 1e-300)
        gram += scale * (e @ (e @ t).T).T
        xy += scale * (e @ v)
        rows += mom.rows
    return gram, xy, rows


def _zero_removed(node: gs.Node, member: Member, gone: np.ndarray) -> None:
    """Zero the weight's input slices of removed channels: the same function as slicing them away."""
    if gone.any():
        node.inputs[1].values = zeroed(node.inputs[1].values, member.axis, np.nonzero(gone)[0])


def _refit(c: _Consumer, moments: tuple[Moments, Moments], gone: np.ndarray, analysis: Analysis,
           new_bias: dict[int, np.ndarray], refit: bool) -> ConsumerFit:
    """Least squares on the features still read: the change to the weights (and bias) that best
    reproduces the target. The ridge on that change is chosen on held-out rows (0 is plain lstsq),
    then the weights are fitted on all rows; with too few rows this keeps the fit from exploding."""
    view = c.view
    rows, held_rows = moments[0].rows + moments[1].rows, moments[1].rows
    w = view.matrix()  # removed inputs already zero
    alive = ~gone[analysis.resolution.cls[c.member.elements]][view.feature_positions()]
    keep = np.nonzero(alive)[0]
    bias = view.takes_bias()
    cols = np.append(keep, view.features) if bias else keep
    fit_set, held = (m.on(cols) for m in moments)
    check = held if held_rows else fit_set
    theta0 = np.vstack([w[:, keep].T, np.zeros((1, w.shape[0]))]) if bias else w[:, keep].T
    norm = max(check.yy, 1e-300)
    base = check.error(theta0)
    result = ConsumerFit(c.member.node, rows, held_rows, len(keep), float(np.sqrt(max(base, 0) / norm)))
    if not refit or not len(cols):
        return result
    ridge, best = _choose_ridge(fit_set, check, theta0, base)
    result.error_after, result.ridge = float(np.sqrt(max(best, 0) / norm)), ridge
    if ridge is None:
        return result
    total = fit_set + held
    scale = ridge * float(np.trace(total.xx)) / len(cols)
    delta = scipy.linalg.lstsq(total.xx + scale * np.eye(len(cols)), total.xy - total.xx @ theta0, cond=RCOND,
                               lapack_driver="gelsy")[0]
    theta = theta0 + delta
    w[:, keep] = theta[:len(keep)].T
    view.set_matrix(w)
    if bias:
        alpha = float(c.node.attrs.get("alpha", 1.0)) if c.node.op == "Gemm" else 1.0
        add_bias(c.node, theta[-1] / alpha, new_bias)
    return result


def _choose_ridge(fit_set: Moments, check: Moments, theta0: np.ndarray, base: float) -> tuple[float | None, float]:
    """The ridge strength whose fit on `fit_set` reproduces `check` best, and that error (None: no re-fit)."""
    e, v = scipy.linalg.eigh(fit_set.xx)
    proj = v.T @ (fit_set.xy - fit_set.xx @ theta0)
    mean = max(float(e.mean()), 1e-300)
    best, chosen = base, None
    for ridge in RIDGE:
        d = e + ridge * mean
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > RCOND * max(float(e.max()), 1e-300))
        err = check.error(theta0 + v @ (inv[:, None] * proj))
        if np.isfinite(err) and err < best:
            best, chosen = err, ridge
    return chosen, best


def check_reconstruction(lasso: bool, options: MergeOptions, calibration: Calibration | None) -> None:
    """Refuse combinations reconstruction cannot honour, before any long run (`lasso`: it chooses the channels)."""
    if options.compensate == "mean" and calibration is None:
        raise OnnxPruneError("--compensate mean folds calibration means: it needs calibration inputs "
                             "(--calib FILE.npz or DIR)")
    if lasso and options.compensate in ("merge", "fold", "mean"):
        raise OnnxPruneError("--criterion lasso compensates by reconstruction (or none): use --reconstruct "
                             "or --no-reconstruct, not --compensate " + options.compensate)
    if (lasso or options.compensate == "reconstruct") and calibration is None:
        what = "--criterion lasso" if lasso else "reconstruction"
        raise OnnxPruneError(f"{what} needs calibration inputs (--calib FILE.npz or DIR)")
