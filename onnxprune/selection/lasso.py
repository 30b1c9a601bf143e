"""LASSO channel selection (He et al., ICCV 2017) from sufficient statistics.

min ||Y - sum_i beta_i Z_i||^2 + lambda ||beta||_1 only needs G = Z^T Z and q = Z^T Y, so it is
solved on [channels x channels] matrices whatever the number of calibration rows. scikit-learn's
`lars_path_gram` gives the whole regularisation path: the channels active at the first lambda with
`keep` of them are exactly what raising lambda by doubling and bisection would converge to, found
without a search.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import OnnxPruneError


def _lars_path_gram():
    try:
        from sklearn.linear_model import lars_path_gram
    except ImportError:
        raise OnnxPruneError("--criterion lasso needs scikit-learn: pip install 'onnxprune[lasso]'") from None
    return lars_path_gram


def require_solver() -> None:
    """Fail in one line before any long run when the LASSO solver is not installed."""
    _lars_path_gram()


def lasso_keep(gram: np.ndarray, xy: np.ndarray, rows: int, keep: int) -> tuple[np.ndarray, str | None]:
    """The `keep` channels the LASSO path selects first (sorted), and a note when the path fell short.

    When fewer than `keep` contributions are independent the path ends early; the remaining slots go
    to the channels with the largest contribution energy (diagonal of the Gram).
    """
    n = len(xy)
    if keep >= n:
        return np.arange(n), None
    if keep <= 0:
        return np.zeros(0, np.int64), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lars warns on degenerate (collinear) paths and stops there
        _, _, coefs = _lars_path_gram()(xy, gram, n_samples=max(rows, 1), method="lasso", max_iter=4 * n)
    counts = np.count_nonzero(coefs, axis=0)
    hit = np.nonzero(counts == keep)[0]
    if len(hit):
        return np.sort(np.nonzero(coefs[:, hit[0]])[0]), None
    best = np.nonzero(counts <= keep)[0]
    chosen = list(np.nonzero(coefs[:, best[-1]])[0]) if len(best) else []
    on_path = len(chosen)
    energy = np.diag(gram).copy()
    energy[chosen] = -np.inf
    chosen += list(np.argsort(-energy, kind="stable")[: keep - on_path])
    return np.sort(np.asarray(chosen, np.int64)), (f"the LASSO path ended at {on_path} channels; the other "
                                                    f"{keep - on_path} were chosen by contribution energy")
