"""Scaling-law fits over runs: trendline, saturating power law, Chinchilla L(N, D), IsoFLOP.

    python analysis/fit.py --csv FILE --form trendline|power|chinchilla|isoflop --y-col COL
        [--n-col COL] [--d-col COL] [--c-col COL] [--group-col COL] [--bootstrap K] [--json]

Forms (each returns a dict of parameters; with bootstrap K > 0 also "intervals", 95%
percentile intervals over K resamples of the runs):
  trendline   log(metric) = intercept + slope * log(C): the paper's per-benchmark straight line
              on log-log axes (Transfusion sec. 4.2, Figure 5).
  power       metric = E + A * C^-alpha, fitted as in `analysis/optim.py`.
  chinchilla  L = E + A / N^alpha + B / D^beta: Hoffmann et al. 2022 approach 3 as corrected by
              Besiroglu et al. 2024 (Huber delta 1e-3 on log residuals, summed; L-BFGS from a
              grid of starts; bootstrap over runs). Also reports a = beta / (alpha + beta) and
              b = alpha / (alpha + beta), the exponents of N*(C) and D*(C).
  isoflop     Hoffmann approach 2 as run by Porian et al. 2024: per compute budget a parabola
              of the metric in log N gives N*(C) (and in log D, D*(C)); straight lines of
              log N*, log D* on log C give their exponents.
C defaults to 6 N D; D defaults to C / (6 N). Non-positive values cannot enter log fits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Callable

import numpy as np
import pandas as pd

from analysis.optim import FitError, at_bounds, bootstrap, fit_lse, intervals, start_grid, top_starts
from analysis.resample import cluster_counts, weighted_line

MIN_POINTS = {"trendline": 2, "power": 4, "chinchilla": 8, "isoflop": 3}


def _positive(name: str, v) -> np.ndarray:
    v = np.asarray(v, float)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise FitError(f"{name} must be finite and positive for a log fit")
    return v


def _need(form: str, n: int) -> None:
    if n < MIN_POINTS[form]:
        raise FitError(f"{form} fit needs at least {MIN_POINTS[form]} points, got {n}")


def _with_bootstrap(result: dict, refit: Callable[[np.ndarray], dict], n: int, k: int, keys: list[str],
                    strata: np.ndarray | None = None, seed: int = 0) -> dict:
    if k > 0:
        samples = bootstrap(refit, n, k, seed=seed, strata=strata)
        result["intervals"] = intervals(samples, keys)
        result["bootstrap"] = {"resamples": k, "succeeded": len(samples)}
    return result


# ------------------------------------------------------------------ trendline

def fit_trendline(C, y, bootstrap_k: int = 0, seed: int = 0) -> dict:
    """log y = intercept + slope * log C by least squares -> {intercept, slope, r2, n}."""
    C, y = _positive("compute", C), _positive("metric", y)
    _need("trendline", len(np.unique(C)))
    x, ly = np.log(C), np.log(y)

    def fit(idx: np.ndarray) -> dict:
        if len(np.unique(x[idx])) < 2:
            raise FitError("resample has one compute value")
        slope, intercept = np.polyfit(x[idx], ly[idx], 1)
        return {"intercept": float(intercept), "slope": float(slope)}

    res = fit(np.arange(len(x)))
    resid = ly - (res["intercept"] + res["slope"] * x)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    res.update(r2=1 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0, n=len(x))
    if bootstrap_k > 0:  # all resamples at once: a straight line needs no optimiser
        slope, mx, my = weighted_line(cluster_counts(np.random.default_rng(seed), len(x), bootstrap_k), x, ly)
        ok = np.isfinite(slope)
        samples = {"slope": slope[ok], "intercept": (my - slope * mx)[ok]}
        res["intervals"] = {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
                            for k, v in samples.items() if len(v)}
        res["bootstrap"] = {"resamples": bootstrap_k, "succeeded": int(ok.sum())}
    return res


def trend_value(fit: dict, C) -> np.ndarray:
    """The trendline's metric at compute C."""
    return np.exp(fit["intercept"] + fit["slope"] * np.log(np.asarray(C, float)))


def trend_compute(fit: dict, y) -> np.ndarray:
    """The compute at which the trendline reaches metric y (its inverse)."""
    return np.exp((np.log(np.asarray(y, float)) - fit["intercept"]) / fit["slope"])


# ------------------------------------------------------------------ saturating power law

def _power_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # E below the smallest metric; for each (E, alpha) the log-space least-squares A (data-aware).
    rows = []
    for f in (0.01, 0.2, 0.5, 0.7, 0.85, 0.95, 0.99):
        E = f * y.min()
        for alpha in (0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2, 2.0):
            a = float(np.mean(np.log(np.maximum(y - E, 1e-12 * y.max())) + alpha * x))
            rows.append([math.log(E), a, alpha])
    return np.array(rows)


def fit_power(C, y, delta: float = 1e-3, bootstrap_k: int = 0, seed: int = 0) -> dict:
    """metric = E + A * C^-alpha (lower-is-better metrics) -> {E, A, alpha, loss, n}."""
    C, y = _positive("compute", C), _positive("metric", y)
    _need("power", len(y))
    x, ly = np.log(C)[:, None], np.log(y)

    def fit(idx: np.ndarray, extra=None, k: int = 8) -> dict:
        theta, loss, ok = fit_lse(x[idx], ly[idx], _power_starts(x[idx, 0], y[idx]), delta, top_k=k, extra_starts=extra)
        return {"E": math.exp(theta[0]), "A": math.exp(theta[1]), "alpha": float(theta[2]), "loss": loss,
                "converged": ok, "_theta": theta}

    res = fit(np.arange(len(y)))
    theta = res.pop("_theta")
    res.update(n=len(y), delta=delta, at_bound=[n for n, b in zip(("E", "A", "alpha"), at_bounds(theta, ly)) if b])
    # Resamples restart from the full-data optimum and their own 2 best grid starts.
    return _with_bootstrap(res, lambda idx: fit(idx, theta[None], 2), len(y), bootstrap_k, ["E", "A", "alpha"], seed=seed)


# ------------------------------------------------------------------ Chinchilla L(N, D)

def _chinchilla_starts(y: np.ndarray) -> np.ndarray:
    # Hoffmann et al.'s grid (e in [-1, 1], a, b in [0, 25], alpha, beta in [0, 2]) plus
    # values of e near the smallest loss, so that metrics not on the LM-loss scale also start close.
    e = sorted({-1.0, -0.5, 0.0, 0.5, 1.0, *np.log(y.min() * np.array([0.5, 0.8, 0.95])).round(3)})
    ab = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    s = [0.0, 0.5, 1.0, 1.5, 2.0]
    return start_grid(e, [ab, ab], [s, s])


def _chinchilla_params(theta: np.ndarray) -> dict:
    E, A, B, alpha, beta = math.exp(theta[0]), math.exp(theta[1]), math.exp(theta[2]), float(theta[3]), float(theta[4])
    tot = alpha + beta
    return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta,
            "a": beta / tot if tot > 0 else math.nan, "b": alpha / tot if tot > 0 else math.nan}


def fit_chinchilla(N, D, y, delta: float = 1e-3, bootstrap_k: int = 0, seed: int = 0, top_k: int = 8) -> dict:
    """L(N, D) = E + A / N^alpha + B / D^beta -> {E, A, B, alpha, beta, a, b, loss, n, ...}.

    The grid (~7,000 starts) is scored once on all points; L-BFGS runs from its top_k. Each
    bootstrap resample rescores the full data's 4 * top_k best starts and runs L-BFGS from its
    best 2 and from the full-data optimum, which keeps 200 resamples of ~250 points well under
    a minute on one core.
    """
    N, D, y = _positive("N", N), _positive("D", D), _positive("metric", y)
    _need("chinchilla", len(y))
    X, ly = np.log(np.column_stack([N, D])), np.log(y)
    starts = top_starts(_chinchilla_starts(y), X, ly, delta, 4 * top_k)

    def fit(idx: np.ndarray, starts: np.ndarray, k: int, extra=None) -> dict:
        theta, loss, ok = fit_lse(X[idx], ly[idx], starts, delta, top_k=k, extra_starts=extra)
        return {**_chinchilla_params(theta), "loss": loss, "converged": ok, "_theta": theta}

    res = fit(np.arange(len(y)), starts, top_k)
    theta = res.pop("_theta")
    bound = [n for n, b in zip(("E", "A", "B", "alpha", "beta"), at_bounds(theta, ly)) if b]
    if {"alpha", "beta"} & set(bound):
        bound += ["a", "b"]  # their ratio is then the box's too
    res.update(n=len(y), delta=delta, at_bound=bound)
    return _with_bootstrap(res, lambda idx: fit(idx, starts, 2, theta[None]), len(y),
                           bootstrap_k, ["E", "A", "B", "alpha", "beta", "a", "b"], seed=seed)


def chinchilla_value(p: dict, N, D) -> np.ndarray:
    """The fitted L(N, D)."""
    return p["E"] + p["A"] / np.asarray(N, float) ** p["alpha"] + p["B"] / np.asarray(D, float) ** p["beta"]


# ------------------------------------------------------------------ IsoFLOP (approach 2)

def budget_ids(C, rel_tol: float = 0.05) -> np.ndarray:
    """Group compute values into budgets: sorted values closer than rel_tol (relative) share one."""
    C = np.asarray(C, float)
    order = np.argsort(C)
    ids = np.empty(len(C), int)
    current, prev = 0, None
    for i in order:
        if prev is not None and math.log(C[i] / prev) > math.log1p(rel_tol):
            current += 1
        ids[i], prev = current, C[i]
    return ids


def _parabola_min(u: np.ndarray, y: np.ndarray, window: float) -> tuple[float, float]:
    """argmin and min over u of a parabola fitted near the lowest point of y(u).

    The points used are those within `window` (relative) of the lowest y, and at least the
    three around it: far from the optimum an IsoFLOP profile is not a parabola, and a fit over
    the whole sweep pulls the vertex towards the wide side (on Porian et al.'s sweeps a
    full-range fit misses their N* exponents by up to 0.37; this window reproduces them to 0.03).
    FitError if the lowest point is at an end of the sampled range or the parabola opens down.
    """
    o = np.argsort(u)
    u, y = u[o], y[o]
    i = int(np.argmin(y))
    if i == 0 or i == len(u) - 1:
        raise FitError("lowest point at an end of the sampled range")
    sel = y <= y[i] + window * abs(y[i])
    sel[i - 1:i + 2] = True
    c2, c1, c0 = np.polyfit(u[sel], y[sel], 2)
    if c2 <= 0:
        raise FitError("parabola opens downward")
    u_star = -c1 / (2 * c2)
    return float(u_star), float(c0 + c1 * u_star + c2 * u_star ** 2)


def _best_per_size(n: np.ndarray, d: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Several runs of one size at one budget (e.g. a learning-rate sweep): keep the best, as Porian et al. do.
    order = np.lexsort((y, n))
    first = np.r_[True, n[order][1:] != n[order][:-1]]
    keep = order[first]
    return n[keep], d[keep], y[keep]


def fit_isoflop(N, y, C=None, D=None, min_points: int = 3, window: float = 0.1, rel_tol: float = 0.05,
                bootstrap_k: int = 0, seed: int = 0, noise_sd: float = 0.0) -> dict:
    """N*(C) ~ C^a and D*(C) ~ C^b from per-budget parabolas -> {a, b, n_coef, d_coef, budgets, ...}.

    Compute values within rel_tol of each other form one budget. Per budget, the metric is
    fitted as a parabola in log N near its lowest point (`_parabola_min`; likewise in log D);
    budgets with fewer than `min_points` sizes or no interior minimum are left out (listed in
    "dropped_budgets"); at least two budgets must remain. The metric must be lower-is-better.

    Intervals: with noise_sd > 0 (one run's seed noise in the metric's units), each of the
    bootstrap_k draws adds that noise to every run and refits; else runs are resampled within
    each budget. Resampling runs drops sizes, and a budget that loses a size next to its minimum
    cannot be fitted, so with few sizes per budget only the draws that keep every size succeed
    and the interval collapses onto the estimate; redrawing the noise keeps the design.
    """
    N, y = _positive("N", N), np.asarray(y, float)
    D = _positive("D", D) if D is not None else None
    C = _positive("C", C) if C is not None else (6.0 * N * D if D is not None else None)
    if C is None:
        raise FitError("isoflop needs a compute column or a data column")
    if D is None:
        D = C / (6.0 * N)
    bud = budget_ids(C, rel_tol)

    def fit(idx: np.ndarray, y: np.ndarray = y) -> dict:
        rows, dropped = [], []
        for b in np.unique(bud[idx]):
            sel = idx[bud[idx] == b]
            Cb = float(np.exp(np.log(C[sel]).mean()))
            n, d, yb = _best_per_size(N[sel], D[sel], y[sel])
            try:
                if len(n) < min_points:
                    raise FitError(f"{len(n)} sizes")
                ln_star, loss_star = _parabola_min(np.log(n), yb, window)
                ld_star, _ = _parabola_min(np.log(d), yb, window)
            except FitError as exc:
                dropped.append({"C": Cb, "reason": str(exc)})
                continue
            rows.append({"C": Cb, "N_star": math.exp(ln_star), "D_star": math.exp(ld_star), "loss_star": loss_star,
                         "points": int(len(n))})
        if len(rows) < 2:
            raise FitError(f"isoflop needs at least 2 budgets with >= {min_points} sizes and an interior "
                           f"minimum, got {len(rows)}")
        lc = np.log([r["C"] for r in rows])
        a, ln_coef = np.polyfit(lc, np.log([r["N_star"] for r in rows]), 1)
        b, ld_coef = np.polyfit(lc, np.log([r["D_star"] for r in rows]), 1)
        return {"a": float(a), "b": float(b), "n_coef": math.exp(ln_coef), "d_coef": math.exp(ld_coef),
                "budgets": rows, "dropped_budgets": dropped}

    res = fit(np.arange(len(N)))
    res.update(n=len(N), window=window)
    if noise_sd > 0 and bootstrap_k > 0:
        rng, every, samples = np.random.default_rng(seed), np.arange(len(N)), []
        for _ in range(bootstrap_k):
            try:
                samples.append(fit(every, y + noise_sd * rng.standard_normal(len(y))))
            except (FitError, np.linalg.LinAlgError):
                continue
        res["intervals"] = intervals(samples, ["a", "b"])
        res["bootstrap"] = {"resamples": bootstrap_k, "succeeded": len(samples), "noise_sd": noise_sd}
        return res
    return _with_bootstrap(res, fit, len(N), bootstrap_k, ["a", "b"], strata=bud, seed=seed)


# ------------------------------------------------------------------ CLI

def _column(df: pd.DataFrame, col: str, path: str) -> np.ndarray:
    if col not in df.columns:
        raise FitError(f"column {col!r} not in {path}; available: {', '.join(map(str, df.columns))}")
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float)


def run_form(df: pd.DataFrame, form: str, y_col: str, n_col: str | None = None, d_col: str | None = None,
             c_col: str | None = None, bootstrap_k: int = 0, path: str = "table") -> dict:
    """One fit of `form` over a DataFrame's columns, with the CLI's defaults (C = 6ND, D = C/6N)."""
    y = _column(df, y_col, path)
    N = _column(df, n_col, path) if n_col else None
    D = _column(df, d_col, path) if d_col else None
    C = _column(df, c_col, path) if c_col else None
    if C is None and N is not None and D is not None:
        C = 6.0 * N * D
    if D is None and N is not None and C is not None:
        D = C / (6.0 * N)
    keep = np.isfinite(y) & np.all([np.isfinite(v) for v in (N, D, C) if v is not None], axis=0)
    y, N, D, C = (None if v is None else v[keep] for v in (y, N, D, C))
    if form in ("trendline", "power"):
        if C is None:
            raise FitError(f"{form} needs --c-col, or --n-col and --d-col")
        return (fit_trendline if form == "trendline" else fit_power)(C, y, bootstrap_k=bootstrap_k)
    if N is None:
        raise FitError(f"{form} needs --n-col")
    if form == "chinchilla":
        if D is None:
            raise FitError("chinchilla needs --d-col or --c-col")
        return fit_chinchilla(N, D, y, bootstrap_k=bootstrap_k)
    return fit_isoflop(N, y, C=C, D=D, bootstrap_k=bootstrap_k)


def _summary(res: dict) -> str:
    skip = {"intervals", "budgets", "dropped_budgets", "bootstrap"}
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items() if k not in skip]
    for k, (lo, hi) in res.get("intervals", {}).items():
        parts.append(f"{k} in [{lo:.4g}, {hi:.4g}]")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--form", required=True, choices=["trendline", "power", "chinchilla", "isoflop"])
    ap.add_argument("--n-col")
    ap.add_argument("--d-col")
    ap.add_argument("--c-col")
    ap.add_argument("--y-col", required=True)
    ap.add_argument("--group-col", help="fit each value of this column separately")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="K", help="resamples for 95%% intervals")
    ap.add_argument("--json", action="store_true", help="print parameters (and intervals) as JSON")
    args = ap.parse_args(argv)
    try:
        df = pd.read_csv(args.csv)
        if args.group_col:
            _column(df, args.group_col, args.csv)
            groups = {str(k): g for k, g in df.groupby(args.group_col, sort=True)}
        else:
            groups = {"all": df}
        out = {}
        for name, g in groups.items():
            try:
                out[name] = run_form(g, args.form, args.y_col, args.n_col, args.d_col, args.c_col, args.bootstrap, args.csv)
            except FitError as exc:
                if not args.group_col or "not in" in str(exc):
                    raise
                out[name] = {"error": str(exc)}
    except (FitError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"form": args.form, "y_col": args.y_col, "groups": out}, indent=1))
    else:
        for name, res in out.items():
            print(f"{name}: {res.get('error') or _summary(res)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
