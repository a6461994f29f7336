"""Matched-setting parity FLOP ratio: the primary family comparison where both families ran
the same settings.

    res = paired_parity(table, "text_c4/ppl")   # ratio, log interval, gap, extrapolated share
    res = paired_parity(table, "t2i/fid", c_col="flops_with_head")

Why not the paper's method. The paper (sec 4.2) fits one trendline per family and inverts
Transfusion's at Chameleon's largest run (analysis/parity.py). That reads the comparison off
a single run of one family against a line through the other's, so it carries the full seed
noise of that one run and the full scatter of the other family about its line, and where the
line is misspecified (at toy scale the residuals depend on elements per parameter) it
compares a 50-per-parameter run with a line averaged over 5, 16 and 50. A sweep that ran
every (size, D, seed) setting in both families allows a sharper and fairer comparison: per
setting, the difference of the two families' log metric holds everything but the family
fixed (same size, same data budget, same seed, same data order), so whatever both families
share (the world's difficulty at that budget, the misspecification, most of a setting's luck)
cancels.

The estimator. For each matched setting s, d_s = log m_T(s) - log m_C(s) and x_s = log C_s
(the two runs' mean 6ND compute). A straight line d = a + b (x - x*) lets the gap change
with compute; its value at the largest compute x* is the gap g* where the paper reads parity.
A gap becomes a compute ratio through Transfusion's scaling slope: to close a gap g in log
metric, Transfusion needs log ratio = -g / s_T more log compute. s_T is the slope of
Transfusion's log metric against log C at a fixed number of elements per parameter (one
intercept per elements-per-parameter ratio of the sweep), i.e. the rate at which the metric
improves when N and D grow together, which is how a compute-optimal family buys compute; the
pooled trendline's slope would instead absorb the misspecification along D/N. So

    parity = exp(-g* / s_T)      below 1: Transfusion needs less compute than Chameleon

The same formula serves lower- and higher-is-better metrics; where s_T does not improve the
metric the ratio is +inf (Transfusion behind: it never catches up) or 0 (ahead).

Both lines are weighted: each elements-per-parameter group by the inverse of its residual
variance (two-step least squares), because a 5-per-parameter run is ten times noisier than a
50-per-parameter one and the target is a 50-per-parameter setting.

Intervals. A two-stage cluster bootstrap: settings (size, data budget) drawn with replacement,
then the seed replicates within each drawn setting, so that replicates never stand in for
independent settings and yet the target setting's own seed noise reaches the interval. Each
resample refits both lines, so the slope's uncertainty reaches the ratio, and each draw's
deviation is scaled by sqrt(G / (G - 1)) for G settings (CR1). The weights are the point
estimate's, fixed across resamples. Resampling runs until the endpoints' Monte-Carlo error is
under 0.4% of the interval's log width (analysis/resample.py). The share of draws whose
compute lies outside Transfusion's runs says how much of the interval extrapolates.

Why this bootstrap. In 1,500 simulations per ratio of toy-paper's design, with its C4 slope and
noise (tests/unit/test_analysis_paired.py), the 95% interval covered the true ratio in 94.9%
of them at 1, 95.9% at 0.5, 94.9% at 3 and 99.0% at 0.03, with a median log width of 0.24.
The alternatives, on the same simulations:
- whole settings only, with the weights re-estimated in every resample (the first version):
  92.5% at 1 and 99.7% at 0.03, twice as wide. A resample that repeats a setting shrinks its
  group's residual variance, the weights collapse onto it, and the draws form a narrow core
  around the point estimate with long tails, too narrow on one side;
- settings stratified by elements per parameter: 93.8% at 1 and 98.6% at 0.03 (500 simulations);
- a wild cluster bootstrap with leverage-adjusted residuals, whose design stays fixed:
  76-88% (500 simulations). With four settings per noise group, the interval's width is itself uncertain, and
  only resampling settings carries that.
Far from parity the interval is conservative. There the ratio is ruled by Transfusion's slope
(the gap divided by it), and resampling 12 settings in 3 intercept groups often leaves a group
with two sizes, which widens the slope's spread beyond its sampling spread.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.metrics import direction
from analysis.resample import converged_intervals, two_stage_counts

FAMILIES = ("transfusion", "chameleon")  # A (whose compute is measured), B (the baseline)
SETTING = ("size", "D_budget")  # a setting; seeds are replicates within it
RATIO_KEY = "elements_per_param"
VAR_FLOOR = 1e-6  # (log units)^2: a group that happens to fit exactly does not take all the weight


class PairingError(ValueError):
    """The runs hold too few matched settings for a paired estimate."""


def matched(table: pd.DataFrame, metric: str, c_col: str = "flops") -> pd.DataFrame:
    """One row per (size, D_budget, seed) that both families ran with a positive metric:
    cluster, group (elements per parameter), x (mean log compute), d (log A - log B), xa, ya
    (A's log compute and log metric), yb."""
    need = [*SETTING, "seed", "family", c_col, metric]
    missing = [c for c in need if c not in table]
    if missing:
        raise PairingError(f"the runs record no {', '.join(missing)}")
    t = table[need + (["n_nonembedding"] if "n_nonembedding" in table else [])].copy()
    t[metric] = pd.to_numeric(t[metric], errors="coerce")
    t = t[(t[metric] > 0) & (pd.to_numeric(t[c_col], errors="coerce") > 0)]
    a = t[t["family"] == FAMILIES[0]].set_index([*SETTING, "seed"])
    b = t[t["family"] == FAMILIES[1]].set_index([*SETTING, "seed"])
    a, b = a[~a.index.duplicated()], b[~b.index.duplicated()]
    keys = a.index.intersection(b.index)
    if len(keys) == 0:
        raise PairingError(f"no setting (size, D, seed) ran in both families with {metric}")
    a, b = a.loc[keys], b.loc[keys]
    out = pd.DataFrame(index=keys).reset_index()
    out["xa"] = np.log(a[c_col].to_numpy(float))
    out["x"] = (out["xa"] + np.log(b[c_col].to_numpy(float))) / 2
    out["ya"] = np.log(a[metric].to_numpy(float))
    out["yb"] = np.log(b[metric].to_numpy(float))
    out["d"] = out["ya"] - out["yb"]
    n = a["n_nonembedding"].to_numpy(float) if "n_nonembedding" in a else np.exp(out["xa"]) / (6 * out["D_budget"])
    out[RATIO_KEY] = np.round(out["D_budget"].to_numpy(float) / n).astype(int)
    out["cluster"] = out.groupby(list(SETTING), sort=False).ngroup().to_numpy()
    out["group"] = pd.factorize(out[RATIO_KEY])[0]
    if (out.groupby("group")["xa"].nunique() < 2).any():
        out["group"] = 0  # a ratio run at one size only: no slope within it, so one group for all
    return out


def _line(w: np.ndarray, x: np.ndarray, y: np.ndarray, intercepts: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted least squares of y [k, n] on x [n] with weights w [k, n] and one intercept per
    value of `intercepts` [n], for each of the k rows at once -> dict of slope [k] and, each
    [k, n]: fitted, q (slope = sum(q * y)), base and xbar (the line's value at x0 is
    sum((base + (x0 - xbar) * q) * y) within one intercept group). A row whose x do not vary
    has slope nan."""
    base, xbar = np.zeros_like(y), np.zeros_like(y)
    for g in np.unique(intercepts):
        cols = intercepts == g
        s0 = w[:, cols].sum(1, keepdims=True)
        s0 = np.where(s0 > 0, s0, np.inf)
        base[:, cols] = w[:, cols] / s0
        xbar[:, cols] = (w[:, cols] * x[cols]).sum(1, keepdims=True) / s0
    dx = x - xbar
    sxx = (w * dx * dx).sum(1, keepdims=True)
    ok = sxx > 1e-12
    q = np.where(ok, w * dx / np.where(ok, sxx, 1.0), np.nan)
    slope = (q * y).sum(1)
    mean_y = np.zeros_like(y)
    for g in np.unique(intercepts):
        cols = intercepts == g
        mean_y[:, cols] = (base[:, cols] * y[:, cols]).sum(1, keepdims=True)
    return {"slope": slope, "fitted": mean_y + slope[:, None] * dx, "q": q, "base": base, "xbar": xbar}


def _noise_weights(x: np.ndarray, y: np.ndarray, intercepts: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per-row weights [n] for the second step of a two-step weighted least squares: a line
    weighted equally, then each noise group weighted by 1 / its mean squared residual. The
    noise of a run shrinks with elements per parameter (x10 in log C4 perplexity from 5 to 50
    at toy scale), so an unweighted line would be ruled by its noisiest settings."""
    one = np.ones((1, len(x)))
    resid2 = (y - _line(one, x, y[None], intercepts)["fitted"][0]) ** 2
    w = np.zeros(len(x))
    for g in np.unique(noise):
        rows = noise == g
        w[rows] = 1.0 / max(float(resid2[rows].mean()), VAR_FLOOR)
    return w


def _log_ratio(gap: np.ndarray, slope: np.ndarray, higher: bool) -> np.ndarray:
    """-gap / slope where the slope improves the metric; else +inf (A behind) or -inf (A ahead)."""
    sign = 1.0 if higher else -1.0  # improving slopes have this sign
    improves = np.sign(slope) == sign
    behind = gap * sign < 0
    safe = np.where(improves, slope, 1.0)
    out = np.where(improves, -gap / safe, np.where(behind, np.inf, -np.inf))
    return np.where(np.isnan(slope) | np.isnan(gap), np.nan, out)


class Paired:
    """The estimator on one set of matched runs: its point estimate and bootstrap draws."""

    def __init__(self, p: pd.DataFrame, higher: bool) -> None:
        self.higher = higher
        self.x, self.xa = p["x"].to_numpy(float), p["xa"].to_numpy(float)
        self.d, self.ya = p["d"].to_numpy(float), p["ya"].to_numpy(float)
        self.group, self.members = p["group"].to_numpy(), p["cluster"].to_numpy()
        self.n_clusters = int(self.members.max()) + 1
        self.x_star = float(self.x.max())
        self.one = np.zeros(len(p), int)
        self.w_gap = _noise_weights(self.x, self.d, self.one, self.group)
        self.w_a = _noise_weights(self.xa, self.ya, self.group, self.group)
        self.point = {k: float(v[0]) for k, v in self.estimate(np.ones((1, len(p)))).items()}

    def estimate(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """For each row of counts [k, n_pairs] (how often each pair is drawn): the gap at x*, A's
        slope, the gap's own slope and the log parity ratio."""
        d, ya = np.broadcast_to(self.d, counts.shape), np.broadcast_to(self.ya, counts.shape)
        fd = _line(counts * self.w_gap, self.x, d, self.one)
        gap = ((fd["base"] + (self.x_star - fd["xbar"]) * fd["q"]) * d).sum(1)
        s_a = _line(counts * self.w_a, self.xa, ya, self.group)["slope"]
        return {"gap": gap, "slope_a": s_a, "gap_slope": fd["slope"], "log_ratio": _log_ratio(gap, s_a, self.higher)}

    def draws(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """k bootstrap draws of (log ratio, gap): settings drawn with replacement, then the seed
        replicates within each drawn setting (analysis.resample.two_stage_counts). Each draw's
        gap and slope deviate from the point estimate by sqrt(G / (G - 1)) times what the
        resample gave: the bootstrap variance of a statistic over G clusters is (G - 1) / G of
        its variance (the small-sample factor of cluster-robust errors, CR1), which matters at
        toy-paper's 12 settings."""
        e = self.estimate(two_stage_counts(rng, self.members, k))
        c = math.sqrt(self.n_clusters / (self.n_clusters - 1))
        gap = self.point["gap"] + c * (e["gap"] - self.point["gap"])
        slope = self.point["slope_a"] + c * (e["slope_a"] - self.point["slope_a"])
        return np.stack([_log_ratio(gap, slope, self.higher), gap], 1)


def paired_parity(table: pd.DataFrame, metric: str, c_col: str = "flops", seed: int = 0, **resampling) -> dict:
    """The matched-setting parity ratio of `metric` (module docstring) -> dict with ratio,
    interval (ratio units), log_interval (analysis.resample.Interval), gap (A / B metric at
    the largest compute) and its interval, slope_a, gap_slope, extrapolated_share, n_pairs,
    n_settings, C_target, x range of A's runs. `resampling` goes to
    analysis.resample.converged_intervals (min_resamples, max_resamples). Raises PairingError
    where fewer than 3 settings at 2+ computes are matched."""
    p = matched(table, metric, c_col)
    n_clusters = int(p["cluster"].nunique())
    if n_clusters < 3 or p["x"].nunique() < 2:
        raise PairingError(f"{metric}: {n_clusters} matched setting(s); a paired estimate needs 3+ at 2+ computes")
    est = Paired(p, direction(metric)[0])
    point = est.point
    iv, gap_iv = converged_intervals(est.draws, seed=seed, **resampling)
    higher, x_star = est.higher, est.x_star
    xa_lo, xa_hi = float(p["xa"].min()), float(p["xa"].max())
    needed = x_star + iv.draws
    outside = (needed < xa_lo - 1e-9) | (needed > xa_hi + 1e-9)
    return {
        "metric": metric, "c_col": c_col, "higher_is_better": higher,
        "ratio": _exp(point["log_ratio"]),
        "interval": [_exp(iv.lo), _exp(iv.hi)], "log_interval": iv,
        "gap": math.exp(point["gap"]), "gap_interval": [_exp(gap_iv.lo), _exp(gap_iv.hi)], "gap_log_interval": gap_iv,
        "slope_a": point["slope_a"], "gap_slope": point["gap_slope"],
        "extrapolated_share": float(outside.mean()) if len(outside) else math.nan,
        "n_pairs": len(p), "n_settings": n_clusters, "C_target": math.exp(x_star),
        "C_a_range": [math.exp(xa_lo), math.exp(xa_hi)],
    }


def _exp(v: float) -> float:
    """exp, with exp(+-inf) = inf or 0 (a ratio that cannot be reached) and nan kept."""
    return math.nan if math.isnan(v) else (math.inf if v == math.inf else math.exp(v))
