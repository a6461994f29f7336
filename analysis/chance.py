"""Whether runs beat a metric's chance reference: no ratio is computed from metrics at chance.

    ref = chance_reference(row, "caption/cider")     # (value, name) or None
    ok, why = beyond_chance(runs, "caption/cider")   # every run's interval on the better side?

evals.json stores, beside each benchmark, what trivial answers score on the same items
(`<metric>_ref_<kind>`: shuffled captions, one constant caption, random or black images, a
unigram model). The chance reference of a metric is the best of them, in the metric's own
direction: a model that does no better has learnt nothing the benchmark measures, and a ratio
of two such numbers (a parity, say) is a ratio of noise. A run beats chance when its whole 95%
interval is on the better side: `<metric>_lo/_hi`, or where none was recorded (CIDEr) the value
give or take 1.96 seed standard deviations.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.metrics import direction

REF_KINDS = ("shuffled", "constant", "random", "black", "unigram")


def chance_reference(row: pd.Series | dict, metric: str) -> tuple[float, str] | None:
    """The best trivial reference recorded beside `metric` in one run -> (value, kind), or None."""
    higher = direction(metric)[0]
    refs = []
    for kind in REF_KINDS:
        v = row.get(f"{metric}_ref_{kind}")
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
            refs.append((float(v), kind))
    if not refs:
        return None
    return max(refs) if higher else min(refs)


def _bound(row: pd.Series, metric: str, higher: bool, log_sd: float) -> float:
    """The run's interval end nearest chance: lo for higher-is-better, hi for lower; where the
    run records no interval (CIDEr), its value moved 1.96 seed standard deviations (log_sd, in
    log) towards chance."""
    end = row.get(f"{metric}_lo" if higher else f"{metric}_hi")
    if end is not None and isinstance(end, (int, float)) and math.isfinite(end):
        return float(end)
    shift = 1.959964 * (log_sd if math.isfinite(log_sd) else 0.0)
    return float(row[metric]) * math.exp(-shift if higher else shift)


def beyond_chance(runs: pd.DataFrame, metric: str, log_sd: float = math.nan) -> tuple[bool, str]:
    """(True, "") when every run's interval beats its chance reference (a run that records none
    counts as beating it); else (False, the numbers). log_sd: one run's seed noise of the metric
    (log), the interval of a run that records none."""
    higher = direction(metric)[0]
    failing = []
    for _, r in runs.iterrows():
        ref = chance_reference(r, metric)
        if ref is None or not math.isfinite(float(r.get(metric, math.nan))):
            continue
        bound = _bound(r, metric, higher, log_sd)
        if (bound <= ref[0]) if higher else (bound >= ref[0]):
            failing.append(f"{r['family']} {r['size']} seed {r['seed']}: {float(r[metric]):.3g} against "
                           f"{ref[1]} {ref[0]:.3g}")
    return (not failing), "; ".join(failing)
