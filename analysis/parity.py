"""Parity FLOP ratio: how much compute family A needs to match family B (paper sec. 4.2, Table 3).

    python analysis/parity.py --csv FILE --metric COL --family-col COL --a NAME --b NAME
        [--c-col COL] [--higher-is-better] [--bootstrap K] [--json]

The paper's definition (../shared/paper-notes.md "FLOPs and the parity ratio"): per benchmark
and family, fit the trendline log(metric) = i + s log(C); take B's (Chameleon's) largest run,
its compute C_B and its result y_B; invert A's (Transfusion's) trendline to find the compute
C_A at which A reaches y_B; the ratio is C_A / C_B. Below 1, A needs less compute. The
inversion is the same for lower- and higher-is-better metrics; the direction only decides
whether A's trendline improves with compute at all (if it does not, the ratio is undefined).

`ratio_at(C)` is the same comparison at any compute, with B's trendline value at C as target.
Bootstrap intervals resample A's runs, refit A's trendline and recompute the ratio; B's
largest run (its compute and measured result) is the target, so B's trendline, which the ratio
does not use, needs no resampling. The resampling goes on until the interval's endpoints are
converged (analysis/resample.py: at least `bootstrap_k` draws and at least 10,000; a draw whose
trendline does not improve is dropped), and reports the share of draws that extrapolate. With
`seed_sigma` (analysis/seeds.py: the log-space spread of one run's metric across seeds) each resample also redraws the target as
y_B * exp(seed_sigma * z / sqrt(m)), z standard normal, m the runs averaged at B's largest
compute, so the interval covers the seed noise of the run compared against.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd

from analysis.fit import FitError, fit_trendline, trend_compute, trend_value
from analysis.metrics import direction
from analysis.resample import MIN_RESAMPLES, cluster_counts, converged_interval, weighted_line

DEFAULT_C = "flops"


def _families(df: pd.DataFrame, metric: str, family_col: str, a: str, b: str, c_col: str):
    for col in (metric, family_col, c_col):
        if col not in df.columns:
            raise FitError(f"column {col!r} not found; available: {', '.join(map(str, df.columns))}")
    d = df[[family_col, c_col, metric]].copy()
    d[c_col] = pd.to_numeric(d[c_col], errors="coerce")
    d[metric] = pd.to_numeric(d[metric], errors="coerce")
    d = d[np.isfinite(d[c_col]) & np.isfinite(d[metric]) & (d[c_col] > 0) & (d[metric] > 0)]
    out = []
    for name in (a, b):
        g = d[d[family_col].astype(str) == str(name)]
        if g[c_col].nunique() < 2:
            have = ", ".join(sorted(map(str, d[family_col].unique())))
            raise FitError(f"family {name!r} has {len(g)} runs with {metric}, need 2+ computes (families: {have})")
        out.append((g[c_col].to_numpy(float), g[metric].to_numpy(float)))
    return out


def _ratio(fit_a: dict, y_target: float, c_target: float, higher: bool) -> float:
    improves = fit_a["slope"] > 0 if higher else fit_a["slope"] < 0
    if not improves or fit_a["slope"] == 0:
        return math.nan
    return float(trend_compute(fit_a, y_target) / c_target)


def parity(df: pd.DataFrame, metric: str, family_col: str = "family", a: str = "transfusion", b: str = "chameleon",
           c_col: str = DEFAULT_C, higher_is_better: bool = False, bootstrap_k: int = 0, seed: int = 0,
           seed_sigma: float = 0.0) -> dict:
    """Parity FLOP ratio of family a against family b's largest run -> dict.

    Keys: ratio, C_b (B's largest compute), y_b (its result; the mean if several runs share that
    compute), C_a_needed, fit_a, fit_b (trendlines), note (why ratio is NaN, or that it is
    extrapolated beyond the computes A was run at, with extrapolated=True), and with
    bootstrap_k > 0: interval [lo, hi] (95%, percentile), extrapolated_share and bootstrap counts
    with the Monte-Carlo error (seed_sigma: see the module docstring; nan or 0 leaves the target
    fixed).
    """
    (ca, ya), (cb, yb) = _families(df, metric, family_col, a, b, c_col)
    fit_a, fit_b = fit_trendline(ca, ya), fit_trendline(cb, yb)
    c_top = float(cb.max())
    y_top = float(yb[cb == c_top].mean())
    ratio = _ratio(fit_a, y_top, c_top, higher_is_better)
    res = {"metric": metric, "a": a, "b": b, "higher_is_better": higher_is_better, "ratio": ratio,
           "C_b": c_top, "y_b": y_top, "C_a_needed": ratio * c_top, "fit_a": fit_a, "fit_b": fit_b,
           "n_a": len(ca), "n_b": len(cb)}
    if not math.isfinite(ratio):
        res["note"] = f"{a}'s trendline does not improve with compute"
    elif not ca.min() <= res["C_a_needed"] <= ca.max():
        # The trendline is read outside the computes A was run at: a power law extrapolated
        # by orders of magnitude says little (e.g. a ratio of 1e-10 from a shallow slope).
        res["extrapolated"] = True
        res["note"] = (f"extrapolated: {a} would need C={res['C_a_needed']:.3g}, outside its runs' "
                       f"[{ca.min():.3g}, {ca.max():.3g}]")
    if bootstrap_k > 0:
        sigma = seed_sigma if seed_sigma and math.isfinite(seed_sigma) else 0.0
        m = int((cb == c_top).sum())
        x, ly = np.log(ca), np.log(ya)
        sign = 1.0 if higher_is_better else -1.0

        def draws(rng: np.random.Generator, k: int) -> np.ndarray:
            slope, mx, my = weighted_line(cluster_counts(rng, len(ca), k), x, ly)
            target = math.log(y_top) + rng.standard_normal(k) * sigma / math.sqrt(m)
            improves = np.sign(slope) == sign
            with np.errstate(divide="ignore", invalid="ignore"):
                log_c = mx + (target - my) / slope  # A's trendline inverted at the (redrawn) target
            return np.where(improves, log_c - math.log(c_top), np.nan)

        iv = converged_interval(draws, seed=seed, min_resamples=max(bootstrap_k, MIN_RESAMPLES))
        res["bootstrap"] = {"resamples": iv.resamples, "succeeded": iv.valid, "seed_sigma": sigma,
                            "mc_error": iv.mc_error, "rel_mc_error": iv.rel_error(), "converged": iv.converged}
        if math.isfinite(iv.lo) and math.isfinite(iv.hi):
            res["interval"] = [math.exp(iv.lo), math.exp(iv.hi)]
            needed = math.log(c_top) + iv.draws
            res["extrapolated_share"] = float(((needed < math.log(ca.min())) | (needed > math.log(ca.max()))).mean())
    return res


def family_parity(g: pd.DataFrame, metric: str, bootstrap_k: int, seed_sigma: float) -> dict:
    """Transfusion against Chameleon over 6ND compute, in the metric's own direction: parity()'s
    dict, or {"ratio": nan, "note": why} where the runs cannot give one."""
    try:
        return parity(g, metric, "family", "transfusion", "chameleon", DEFAULT_C, direction(metric)[0],
                      bootstrap_k, seed_sigma=seed_sigma)
    except FitError as exc:
        return {"ratio": math.nan, "note": str(exc)}


def ratio_at(res: dict, C) -> np.ndarray:
    """Parity ratio at compute C: A's compute to reach B's trendline value at C, over C."""
    C = np.asarray(C, float)
    fa = res["fit_a"]
    improves = fa["slope"] > 0 if res["higher_is_better"] else fa["slope"] < 0
    if not improves:
        return np.full_like(C, np.nan)
    return trend_compute(fa, trend_value(res["fit_b"], C)) / C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--metric", required=True)
    ap.add_argument("--family-col", required=True)
    ap.add_argument("--a", required=True, help="family whose trendline is inverted (e.g. transfusion)")
    ap.add_argument("--b", required=True, help="baseline whose largest run is the target (e.g. chameleon)")
    ap.add_argument("--c-col", default=DEFAULT_C, help="compute column (default: flops)")
    ap.add_argument("--higher-is-better", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="K")
    ap.add_argument("--at", type=float, action="append", default=[], metavar="C", help="also the ratio at compute C")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        df = pd.read_csv(args.csv)
        res = parity(df, args.metric, args.family_col, args.a, args.b, args.c_col, args.higher_is_better, args.bootstrap)
    except (FitError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.at:
        res["ratio_at"] = {f"{c:.4g}": float(ratio_at(res, c)) for c in args.at}
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    iv = f" [{res['interval'][0]:.3g}, {res['interval'][1]:.3g}]" if "interval" in res else ""
    print(f"{args.metric}: parity FLOP ratio {args.a}/{args.b} = {res['ratio']:.3g}{iv} "
          f"(target {res['y_b']:.4g} at C={res['C_b']:.3g}){'  ' + res['note'] if 'note' in res else ''}")
    for c, r in res.get("ratio_at", {}).items():
        print(f"  at C={c}: {r:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
