"""Vectorised cluster bootstrap, run until its interval is converged.

    w = cluster_counts(rng, n_clusters, k)          # [k, n_clusters] resample counts
    w = two_stage_counts(rng, members, k)           # [k, n_rows]: clusters, then rows within each
    slope, mx, my = weighted_line(w_rows, x, y)     # one least-squares line per resample
    iv = converged_interval(draw, seed=0)           # draw(rng, k) -> k draws (log space)

A percentile endpoint from K draws is itself random: its Monte-Carlo error is what another K
draws would move it by. `converged_interval` keeps drawing, doubling K from MIN_RESAMPLES, until
each endpoint's Monte-Carlo standard error is below REL_ERROR (0.4%) of the interval's width (in the
draws' own units, log ratios here), and reports that error. The error of the q-th percentile
is read from the order statistics: the K q-th draw's rank has a binomial standard deviation
sqrt(K q (1 - q)), so half the distance between the draws that many ranks either side of it is
the endpoint's standard error. That needs no density estimate and is exact enough at K >= 1e4.

Draws may be +-inf (a ratio that cannot be reached, say); an endpoint at infinity is reported
as such and its error as nan, and the interval counts as converged there: more draws cannot
make it finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MIN_RESAMPLES = 10_000
MAX_RESAMPLES = 1_280_000
CHUNK = 40_000  # draws per call of `draw`, so that a [k, n] resample matrix stays small
# 0.4% of the width: at 1% an endpoint near a rounding boundary (C4's lower end, 0.644) printed
# 0.64 for four bootstrap seeds and 0.65 for the fifth
REL_ERROR = 0.004
LEVEL = 0.95


def cluster_counts(rng: np.random.Generator, n_clusters: int, k: int) -> np.ndarray:
    """How often each of n clusters is drawn in each of k resamples of n clusters with replacement."""
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=k).astype(float)


def two_stage_counts(rng: np.random.Generator, members: np.ndarray, k: int) -> np.ndarray:
    """How often each row is drawn in each of k two-stage resamples: clusters (members [n_rows]
    names each row's cluster, 0..G-1) drawn with replacement, then, for each draw of a cluster
    with m rows, m of its rows drawn with replacement (Davison & Hinkley 1997, sec 3.8). The
    second stage carries the noise between replicates inside one cluster, which the first
    cannot see: where a single cluster rules the statistic (the largest setting with its seed
    replicates, read at its own compute), resampling whole clusters alone holds that cluster's
    mean fixed in every draw that has it."""
    n_clusters = int(members.max()) + 1
    clusters = cluster_counts(rng, n_clusters, k)
    counts = clusters[:, members]
    for c in np.flatnonzero(np.bincount(members, minlength=n_clusters) > 1):
        rows = np.flatnonzero(members == c)
        m = len(rows)
        counts[:, rows] = rng.multinomial((clusters[:, c] * m).astype(np.int64), np.full(m, 1.0 / m))
    return counts


def weighted_line(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares line of y on x with row weights w [k, n], for each of the k rows at once ->
    (slope, weighted mean of x, weighted mean of y), each [k]. A row whose x do not vary has
    slope nan."""
    s0 = w.sum(1)
    mx, my = (w @ x) / s0, (w @ y) / s0
    sxx = w @ (x * x) - s0 * mx * mx
    sxy = w @ (x * y) - s0 * mx * my
    ok = sxx > 1e-12 * np.maximum(1.0, s0 * mx * mx)
    slope = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
    return slope, mx, my


@dataclass
class Interval:
    """A converged percentile interval of draws (in their own units) and how it was reached."""

    lo: float
    hi: float
    resamples: int  # draws made
    valid: int  # draws that were not nan (nan: a resample that cannot be fitted)
    mc_error: float  # the larger endpoint's Monte-Carlo standard error, nan where an endpoint is infinite
    converged: bool  # mc_error <= REL_ERROR * (hi - lo), or an endpoint is infinite
    draws: np.ndarray = field(repr=False)  # the valid draws, for shares (how many extrapolate, say)

    def rel_error(self) -> float:
        width = self.hi - self.lo
        return self.mc_error / width if math.isfinite(self.mc_error) and width > 0 else math.nan


def _endpoint(sorted_draws: np.ndarray, q: float) -> tuple[float, float]:
    """The q-th percentile of sorted draws and its Monte-Carlo standard error (module docstring)."""
    k = len(sorted_draws)
    # a draw itself, not an interpolation: between two infinite draws that would be inf - inf
    value = float(np.quantile(sorted_draws, q, method="inverted_cdf"))
    half = math.sqrt(k * q * (1 - q))
    lo_rank = min(max(int(math.floor(k * q - half)), 0), k - 1)
    hi_rank = min(max(int(math.ceil(k * q + half)), 0), k - 1)
    a, b = sorted_draws[lo_rank], sorted_draws[hi_rank]
    err = (b - a) / 2 if np.isfinite(a) and np.isfinite(b) else math.nan
    return value, float(err)


def summarize(draws: np.ndarray, level: float = LEVEL, rel_error: float = REL_ERROR) -> Interval:
    """Percentile interval of the draws (nan draws dropped) with its Monte-Carlo error."""
    valid = np.sort(draws[~np.isnan(draws)])
    if len(valid) < 100:
        return Interval(math.nan, math.nan, len(draws), len(valid), math.nan, False, valid)
    (lo, e_lo), (hi, e_hi) = _endpoint(valid, (1 - level) / 2), _endpoint(valid, (1 + level) / 2)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Interval(lo, hi, len(draws), len(valid), math.nan, True, valid)
    err = max(e_lo, e_hi)
    return Interval(lo, hi, len(draws), len(valid), err, err <= rel_error * (hi - lo), valid)


def converged_intervals(draw: Callable[[np.random.Generator, int], np.ndarray], seed: int = 0,
                        min_resamples: int = MIN_RESAMPLES, max_resamples: int = MAX_RESAMPLES,
                        level: float = LEVEL, rel_error: float = REL_ERROR) -> list[Interval]:
    """Draw from `draw(rng, k)` (k bootstrap draws of m statistics, [k, m]) until every
    statistic's interval converges (module docstring) or max_resamples is reached; each
    Interval's `converged` says which."""
    rng = np.random.default_rng(seed)

    def more(k: int) -> list[np.ndarray]:
        sizes = [CHUNK] * (k // CHUNK) + ([k % CHUNK] if k % CHUNK else [])
        return [np.atleast_2d(np.asarray(draw(rng, n), float).T).T for n in sizes]

    parts = more(min_resamples)
    while True:
        allv = np.concatenate(parts)
        ivs = [summarize(allv[:, j], level, rel_error) for j in range(allv.shape[1])]
        if all(iv.converged for iv in ivs) or len(allv) >= max_resamples:
            return ivs
        parts += more(min(len(allv), max_resamples - len(allv)))


def converged_interval(draw: Callable[[np.random.Generator, int], np.ndarray], seed: int = 0, **kw) -> Interval:
    """converged_intervals for one statistic (draw returns [k])."""
    return converged_intervals(draw, seed, **kw)[0]
