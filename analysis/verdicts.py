"""A finding's row and how its numbers are printed and judged (analysis/findings.py builds them).

    Finding(...)                 one row of the findings table
    Ratio(log, se).interval()    a ratio with a log-normal 95% interval
    verdict(lo, hi, paper_above_one)   reproduced / not reproduced / inconclusive
    sig2(v)                      a converged bootstrap endpoint, to 2 significant figures
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964


@dataclass
class Finding:
    """One row of the findings table."""

    finding: str
    paper: str
    ours: str
    verdict: str
    basis: str
    sweep: str  # the sweep it is judged on
    estimator: str = "–"
    paper_inside: str = "–"  # whether the paper's value lies inside our interval
    extrapolated: str = "–"  # share of bootstrap draws outside the runs' computes


class AtChance(str):
    """Why a ratio was not computed: its runs do not beat the metric's chance reference."""


def sig2(v: float) -> str:
    """v to 2 significant figures, without an exponent between 1e-3 and 1e4: what a converged
    bootstrap endpoint is determined to."""
    if not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if v == 0:
        return "0"
    r = float(f"{v:.2g}")
    return f"{r:g}" if 1e-3 <= abs(r) < 1e4 else f"{r:.1e}"


def inside(paper_value: float | None, lo: float, hi: float) -> str:
    if paper_value is None or not math.isfinite(paper_value):
        return "–"
    return "inside" if lo <= paper_value <= hi else "excluded"


@dataclass
class Ratio:
    """A ratio with a 95% interval, as the log of its value and the log-space standard error."""

    log: float
    se: float
    note: str = ""

    def interval(self) -> tuple[float, float]:
        return math.exp(self.log - Z95 * self.se), math.exp(self.log + Z95 * self.se)

    def __truediv__(self, other: "Ratio") -> "Ratio":
        notes = dict.fromkeys(filter(None, (self.note, other.note)))  # each once, in order
        return Ratio(self.log - other.log, math.hypot(self.se, other.se), "; ".join(notes))


def over(a: "Ratio | str", b: "Ratio | str") -> "Ratio | str":
    """a / b for two measured ratios (does the gap narrow?); else what is missing."""
    if isinstance(a, Ratio) and isinstance(b, Ratio):
        return a / b
    return a if isinstance(a, str) else b


def verdict(lo: float, hi: float, paper_above_one: bool) -> str:
    if lo > 1 or hi < 1:
        return "reproduced" if (lo > 1) == paper_above_one else "not reproduced"
    return "inconclusive"


def fmt3(v: float) -> str:
    return f"{v:.3g}"


def pct(v: float) -> str:
    return f"{100 * v:.0f}%" if math.isfinite(v) and v >= 0.01 else ("<1%" if math.isfinite(v) else "–")


def mc_share(v: float) -> str:
    """A Monte-Carlo error as a share of the interval's width (nan: an endpoint is infinite)."""
    return f"{100 * v:.1f}%" if math.isfinite(v) else "– (an endpoint is infinite)"
