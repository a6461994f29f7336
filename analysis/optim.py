"""The optimiser behind the saturating power laws: Huber loss on log residuals, many starts.

Both `metric = E + A * C^-alpha` and Chinchilla's `L = E + A / N^alpha + B / D^beta` are sums
of an irreducible term and K power terms. In log space (Hoffmann et al. 2022, approach 3,
eq. 10; as corrected by Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"):

    log L_hat = LSE(e, a_1 - s_1 x_1, ..., a_K - s_K x_K)     x_k = log(input k), E = exp(e) ...
    objective = SUM_i Huber_delta(log L_hat_i - log L_i)

summed over points (a mean makes L-BFGS stop early), minimised with L-BFGS-B (analytic
gradient) from the best few points of a grid of initialisations. The grid itself is scored in
one vectorised pass over (starts x points), so thousands of starts cost a few numpy calls;
bootstrap resamples restart from the full-data optimum and the full data's best grid starts.

theta layout: [e, a_1..a_K, s_1..s_K]; exponents s_k are bounded to [0, S_MAX], e to within
1e-7 of the smallest metric and 10x the largest, a_k to [-A_MAX, A_MAX].
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

S_MAX = 5.0
A_MAX = 200.0


class FitError(ValueError):
    """A fit cannot be made (too few points, non-positive values, no convergence)."""


def _terms(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """theta [G, 1+2K], X [P, K] -> the K+1 log terms [G, P, K+1]."""
    K = X.shape[1]
    e, a, s = theta[:, :1], theta[:, 1:1 + K], theta[:, 1 + K:]
    power = a[:, None, :] - s[:, None, :] * X[None, :, :]
    return np.concatenate([np.broadcast_to(e[:, None, :], power.shape[:2] + (1,)), power], axis=2)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def grid_losses(thetas: np.ndarray, X: np.ndarray, logy: np.ndarray, delta: float) -> np.ndarray:
    """Objective at every row of thetas [G, 1+2K] at once -> [G].

    Evaluated in linear space, exp(e) + sum_k exp(a_k) * exp(-s_k x_k), with exp(-s_k x_k)
    computed once per distinct exponent (a grid repeats each one many times): one log per
    (start, point) instead of K+1 exps, which makes scoring thousands of starts cheap.
    """
    K = X.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        pred = np.exp(thetas[:, :1]) + np.zeros((1, len(logy)))
        for k in range(K):
            uniq, inv = np.unique(thetas[:, 1 + K + k], return_inverse=True)
            powers = np.exp(-uniq[:, None] * X[None, :, k])
            pred += np.exp(thetas[:, 1 + k])[:, None] * powers[inv]
        loss = _huber(np.log(pred) - logy[None, :], delta).sum(axis=1)
    return np.where(np.isfinite(loss), loss, np.inf)


def objective(theta: np.ndarray, X: np.ndarray, logy: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """(summed Huber loss, gradient) at one theta [1+2K]; X [P, K], logy [P]."""
    T = _terms(theta[None], X)[0]  # [P, K+1]
    m = T.max(axis=1, keepdims=True)
    w = np.exp(T - m)
    z = w.sum(axis=1, keepdims=True)
    r = (m + np.log(z))[:, 0] - logy
    w /= z  # softmax: d LSE / d term
    dr = np.clip(r, -delta, delta)  # Huber'(r)
    g_terms = dr[:, None] * w  # [P, K+1]
    grad = np.concatenate([g_terms.sum(0), -(g_terms[:, 1:] * X).sum(0)])
    return float(_huber(r, delta).sum()), grad


def start_grid(e: Sequence[float], a: Sequence[Sequence[float]], s: Sequence[Sequence[float]]) -> np.ndarray:
    """Cartesian grid of starts: e values, then per-term a values and s values -> [G, 1+2K]."""
    return np.array([list(p) for p in itertools.product(e, *a, *s)], dtype=float)


def top_starts(starts: np.ndarray, X: np.ndarray, logy: np.ndarray, delta: float, k: int) -> np.ndarray:
    """The k grid starts with the lowest objective (scored in one vectorised pass per chunk)."""
    X = np.asarray(X, float).reshape(len(logy), -1)
    chunks = np.array_split(starts, max(1, len(starts) // 2048))
    losses = np.concatenate([grid_losses(c, X, logy, delta) for c in chunks])
    return starts[np.argsort(losses, kind="stable")[:k]]


def param_bounds(logy: np.ndarray, K: int) -> list[tuple[float, float]]:
    """fit_lse's box for theta = (log E, K log-coefficients, K exponents)."""
    lo, hi = float(np.min(logy)), float(np.max(logy))
    return [(lo - 16.0, hi + 2.3)] + [(-A_MAX, A_MAX)] * K + [(0.0, S_MAX)] * K


def at_bounds(theta: np.ndarray, logy: np.ndarray) -> list[bool]:
    """Which parameters of a fit_lse optimum sit on its box: their digits say where the box is,
    not what the data determine."""
    K = (len(theta) - 1) // 2
    return [min(abs(t - a), abs(t - b)) < 1e-6 * max(1.0, abs(a), abs(b))
            for t, (a, b) in zip(theta, param_bounds(logy, K))]


def fit_lse(X: np.ndarray, logy: np.ndarray, starts: np.ndarray, delta: float = 1e-3, top_k: int = 8,
            extra_starts: np.ndarray | None = None) -> tuple[np.ndarray, float, bool]:
    """Minimise the objective from the top_k grid starts (plus extra_starts) -> (theta, loss, converged)."""
    X = np.asarray(X, float).reshape(len(logy), -1)
    K = X.shape[1]
    chosen = top_starts(starts, X, logy, delta, top_k) if len(starts) > top_k else starts
    if extra_starts is not None:
        chosen = np.vstack([chosen, extra_starts])
    # Bounds keep degenerate fits (E -> 0 on few points) from running to the iteration limit:
    # E between 1e-7 and 10x the data's range, log-coefficients within +-A_MAX, 0 <= s <= S_MAX.
    bounds = param_bounds(logy, K)
    best: tuple[np.ndarray, float, bool] | None = None
    for x0 in chosen:
        res = minimize(objective, x0, args=(X, logy, delta), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-10})
        if np.isfinite(res.fun) and (best is None or res.fun < best[1]):
            best = (res.x, float(res.fun), bool(res.success))
    if best is None:
        raise FitError("no start converged to a finite loss")
    return best


def bootstrap(fit: Callable[[np.ndarray], dict], n: int, k: int, seed: int = 0,
              strata: np.ndarray | None = None) -> list[dict]:
    """Refit on k resamples of the n rows (with replacement; within each stratum if given).

    Resampling rows = resampling runs, each row being one run. A resample whose fit fails is
    dropped; the caller reports how many survived.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == g) for g in np.unique(strata)]
    out = []
    for _ in range(k):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        try:
            out.append(fit(idx))
        except (FitError, np.linalg.LinAlgError, FloatingPointError):
            continue
    return out


def intervals(samples: list[dict], keys: Sequence[str], level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals {key: [lo, hi]} of the bootstrap samples."""
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for key in keys:
        vals = np.array([s[key] for s in samples if np.isfinite(s.get(key, np.nan))], float)
        if len(vals):
            out[key] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
    return out
