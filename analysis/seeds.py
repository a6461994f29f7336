"""Seed noise: how much one run's metric moves when only its seed changes.

    sigma = seed_sigma(table, "text_c4/ppl")   # log-space standard deviation, or nan

Runs that share everything but the seed (family, size, the budget D_budget, i.e. the sweep's
replicate groups: the toy sweeps train their smallest size at two seeds; the elements actually
trained on differ a little between seeds, so the budget, not D, names the group) give one
variance each, the sample variance of log(metric) within the group; sigma is the square root
of their mean (pooled over groups, each with its degrees of freedom). Log space, because the
metrics the report fits are fitted in log space and their noise scales with their level.
analysis/parity.py adds it to the target that the parity ratio inverts, so the ratio's
interval covers the seed noise of the run it compares against, not only the scatter of the
other family's runs around their trendline.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

REPLICATE_KEYS = ("sweep", "family", "size", "D_budget")


def seed_sigma(table: pd.DataFrame, metric: str, keys: tuple[str, ...] = REPLICATE_KEYS) -> float:
    """Pooled within-group standard deviation of log(metric) over groups of runs that differ
    only in their seed; nan where no group has two seeds with positive values."""
    if metric not in table or "seed" not in table:
        return math.nan
    d = table[[k for k in keys if k in table] + ["seed", metric]].copy()
    d[metric] = pd.to_numeric(d[metric], errors="coerce")
    d = d[d[metric] > 0]
    ss, dof = 0.0, 0
    for _, g in d.groupby([k for k in keys if k in d], dropna=False):
        if g["seed"].nunique() < 2:
            continue
        logs = np.log(g[metric].to_numpy(float))
        ss += float(((logs - logs.mean()) ** 2).sum())
        dof += len(logs) - 1
    return math.sqrt(ss / dof) if dof else math.nan
