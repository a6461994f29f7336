"""The paper's tables from the collected runs, as markdown and LaTeX.

  table3(...)          Table 3 analogue: the largest run of each family (by compute) and the
                       parity FLOP ratio per metric.
  ablation_table(...)  Tables 4-8 analogues: one row per setting of the sweep's knobs (mean over
                       seeds), one column per metric; ABLATION_KNOBS names the knobs per sweep
                       (grid/ablations.py, the table the sweeps are built from).
A table is a pandas DataFrame of display strings; `to_markdown` / `to_latex` render it.

A metric's companions (evals/intervals.py's key scheme: <key>_lo / <key>_hi, its 95% interval;
<key>_floor_real, what real data scores; <key>_ref_<name>, chance levels and ceilings, all at
the run's sample size) are not columns of their own: each metric cell shows them beside the
value, "23.4 [22.1, 24.9] (floor_real 1.2 · ref_random 45 · ref_black 70)", so a reader sees
whether a score beats chance. `is_companion` tells them apart for the fits.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from grid.ablations import ABLATION_KNOBS  # torch-free: the sweeps' design as data

from analysis.metrics import arrow, order_metrics


def fmt(v, digits: int = 4) -> str:
    """A number with `digits` significant figures; '–' for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}g}"
    return str(v)


_COMPANION = re.compile(r"_(lo|hi)$|_floor_[a-z0-9]+$|_ref_[a-z0-9]+$")


def is_companion(metric: str) -> bool:
    """True for a metric's interval bound or reference value (module docstring), not a metric."""
    return bool(_COMPANION.search(metric))


def main_metrics(metrics: list[str]) -> list[str]:
    """The metrics themselves, companions left out."""
    return [m for m in metrics if not is_companion(m)]


def cell(values, metric: str, interval: bool = True) -> str:
    """One metric's display: value, [lo, hi] when recorded (and `interval`), then its floors
    and references; `values` maps keys to numbers (a table row or a dict)."""
    get = values.get
    out = fmt(get(metric))
    lo, hi = get(f"{metric}_lo"), get(f"{metric}_hi")
    if interval and _present(lo) and _present(hi):
        out += f" [{fmt(lo, 3)}, {fmt(hi, 3)}]"
    refs = [(k[len(metric) + 1:], get(k)) for k in _keys(values)
            if k.startswith(f"{metric}_") and re.fullmatch(r"(floor|ref)_[a-z0-9]+", k[len(metric) + 1:])]
    refs = [(name, v) for name, v in refs if _present(v)]
    if refs:
        out += " (" + " · ".join(f"{name} {fmt(v, 3)}" for name, v in refs) + ")"
    return out


def _present(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _keys(values) -> list[str]:
    return list(values.index) if isinstance(values, pd.Series) else list(values)


def _header(metric: str) -> str:
    return f"{metric} {arrow(metric)}"


def table3(table: pd.DataFrame, metrics: list[str], parities: dict, c_col: str = "flops",
           family_col: str = "family", families: tuple[str, ...] = ("transfusion", "chameleon")) -> pd.DataFrame:
    """Largest run of each family (N, D, C and its metrics) plus a parity FLOP ratio row; a
    ratio read off the trendline outside the computes that were run is marked "(extrap.)"."""
    metrics = order_metrics(main_metrics(metrics))
    rows = []
    for fam in families:
        g = table[table[family_col] == fam]
        if g.empty:
            continue
        top = g.loc[g[c_col].idxmax()]
        row = {"": f"{fam} ({top.get('size', '?')}, D={fmt(top['D'], 3)}, C={fmt(top[c_col], 3)})"}
        row.update({_header(m): cell(top, m) for m in metrics})
        rows.append(row)
    row = {"": "parity FLOP ratio"}
    for m in metrics:
        p = parities.get(m, {})
        r = fmt(p.get("ratio"), 3)
        if "interval" in p:
            r += f" [{fmt(p['interval'][0], 2)}, {fmt(p['interval'][1], 2)}]"
        if p.get("extrapolated"):
            r += " (extrap.)"  # read off the trendline outside the computes that were run
        row[_header(m)] = r
    rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(table: pd.DataFrame, sweep: str, metrics: list[str]) -> pd.DataFrame:
    """One row per knob setting of `sweep` (means over seeds; run count shown), metric columns."""
    knobs = [k for k in ABLATION_KNOBS.get(sweep, ()) if k in table.columns]
    g = table[table["sweep"] == sweep]
    if g.empty:
        raise ValueError(f"no finished runs in sweep {sweep!r}")
    if not knobs:
        raise ValueError(f"sweep {sweep!r} has no known knob columns (known sweeps: {', '.join(ABLATION_KNOBS)})")
    metrics = [m for m in order_metrics(main_metrics(metrics)) if m in g.columns and g[m].notna().any()]
    shown = metrics + [c for c in g.columns if is_companion(c) and any(c.startswith(f"{m}_") for m in metrics)
                       and pd.api.types.is_numeric_dtype(g[c])]
    keyed = g.assign(**{k: g[k].astype(str) for k in knobs})
    agg = keyed.groupby(knobs, sort=True)[shown].mean()
    counts = keyed.groupby(knobs, sort=True).size()
    rows = []
    for key, vals in agg.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        row = {k.split(".")[-1]: v for k, v in zip(knobs, key)}
        runs = int(counts.loc[key if len(key) > 1 else key[0]])
        row["runs"] = str(runs)
        # One run's interval is its own; a mean of several runs' bounds would be no interval.
        row.update({_header(m): cell(vals, m, interval=runs == 1) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.values) + " |")
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("–", "--")):
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table (needs \\usepackage{booktabs})."""
    cols = list(df.columns)
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
           r"\toprule", " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(v) for v in r.values) + r" \\" for _, r in df.iterrows()]
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    if label:
        out.append(rf"\label{{{label}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"
