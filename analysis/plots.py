"""Figures from the collected table: Figure 5 analogue, training curves, IsoFLOP curves.

Every figure is written twice, `<stem>.png` (for report.html) and `<stem>.pdf` (for papers),
with matplotlib's Agg backend (no display needed). Functions return the PNG path.

  figure5          each benchmark vs FLOPs on log axes, both families in fixed colours with
                   intervals and trendlines, floors and chance levels, our parity point and
                   the paper's (Transfusion paper Figure 5).
  training_curves  training loss vs elements seen, one smoothed line per run coloured by size,
                   one panel per family.
  isoflop_curves   metric vs N per compute budget with the fitted parabola's N*, and N*(C)
                   with its power law (Hoffmann et al. 2022 Figure 3; Porian et al. 2024).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import paper  # noqa: E402
from analysis.fit import trend_value  # noqa: E402
from analysis.metrics import arrow  # noqa: E402

COLORS = {"transfusion": "tab:blue", "chameleon": "tab:orange"}


def _color(family: str, i: int) -> str:
    return COLORS.get(family, f"C{i + 2}")


def save(fig: plt.Figure, stem: Path) -> Path:
    """Write stem.png and stem.pdf, close the figure, return the PNG path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # No dates or versions in the files: a regenerated report is byte-identical to a committed one.
    fig.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None, "Producer": None,
                                                                        "Creator": None})
    plt.close(fig)
    return stem.with_suffix(".png")


def _grid(n: int, w: float = 4.0, h: float = 3.2) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


REF_STYLE = {"floor_real": ("real vs real", "tab:green"), "ref_random": ("random", "tab:red"),
             "ref_black": ("black", "black"), "ref_shuffled": ("shuffled", "tab:purple"),
             "ref_constant": ("one caption", "tab:brown"), "ref_true": ("true", "tab:green"),
             "ref_unigram": ("unigram", "tab:red")}


def _references(g: pd.DataFrame, metric: str) -> dict[str, float]:
    """A metric's floors and chance levels (evals/intervals.py key scheme), the median over runs:
    they depend on the data and the sample size, not on the model."""
    out = {}
    for col in g.columns:
        name = col[len(metric) + 1:] if col.startswith(f"{metric}_") else ""
        if name in REF_STYLE and pd.api.types.is_numeric_dtype(g[col]) and g[col].notna().any():
            out[name] = float(g[col].median())
    return out


def _parity_marks(ax: plt.Axes, p: dict | None, paper_ratio: float | None) -> None:
    """Our parity point (filled star, with its interval in the label) and the paper's (hollow)."""
    if not p or not math.isfinite(p.get("ratio", math.nan)):
        return
    ax.axhline(p["y_b"], color="gray", lw=0.6, ls=":")
    iv = p.get("interval")
    label = f"parity {p['ratio']:.2g}" + (f" [{iv[0]:.2g}, {iv[1]:.2g}]" if iv else "")
    if p.get("extrapolated"):  # off the runs' computes: named in the legend, not drawn out there
        ax.plot([], [], marker="*", color="k", ms=10, ls="none", label=label + " (extrapolated)")
    else:
        ax.plot([p["C_a_needed"]], [p["y_b"]], marker="*", color="k", ms=10, ls="none", label=label)
    if paper_ratio:
        ax.plot([paper_ratio * p["C_b"]], [p["y_b"]], marker="*", ms=10, ls="none", mfc="none", mec="k",
                label=f"paper's parity {paper_ratio:.3g}")


def figure5(table: pd.DataFrame, metrics: list[str], trends: dict, parities: dict, stem: Path,
            c_col: str = "flops", family_col: str = "family") -> Path:
    """One panel per benchmark (the paper's Figure 5): the metric against compute, log-log, each
    family in its fixed colour with 95% intervals as error bars and its trendline, the floors and
    chance levels as dashed lines, our parity point and the paper's.

    trends[metric][family] is a fit_trendline dict; parities[metric] a parity() dict (or absent).
    A panel whose values are not all positive (GenEval at chance can be 0) keeps a linear y axis.
    """
    fig, axes = _grid(len(metrics), w=4.4, h=3.5)
    families = _family_order(table[family_col].dropna().unique())
    for ax, metric in zip(axes, metrics):
        values = [table[metric].dropna()]
        for i, fam in enumerate(families):
            g = table[(table[family_col] == fam) & table[metric].notna()]
            if g.empty:
                continue
            col = _color(str(fam), i)
            lo, hi = g.get(f"{metric}_lo"), g.get(f"{metric}_hi")
            if lo is not None and hi is not None and lo.notna().any():
                err = np.vstack([(g[metric] - lo).clip(lower=0).fillna(0), (hi - g[metric]).clip(lower=0).fillna(0)])
                ax.errorbar(g[c_col], g[metric], yerr=err, fmt="o", ms=4, color=col, alpha=0.85, lw=0.8, capsize=2,
                            label=str(fam))
            else:
                ax.scatter(g[c_col], g[metric], s=16, color=col, alpha=0.85, label=str(fam))
            fit = trends.get(metric, {}).get(fam)
            if fit and "slope" in fit:
                cs = np.geomspace(g[c_col].min(), g[c_col].max(), 50)
                ax.plot(cs, trend_value(fit, cs), color=col, lw=1.4)
        for name, v in _references(table, metric).items():
            text, col = REF_STYLE[name]
            ax.axhline(v, color=col, lw=0.9, ls="--", alpha=0.7, label=f"{text} {v:.3g}")
            values.append(pd.Series([v]))
        _parity_marks(ax, parities.get(metric), paper.PARITY.get(metric))
        ax.set_xscale("log")
        if (pd.concat(values) > 0).all():
            ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
        ax.set_xlabel("training FLOPs (6ND)")
        ax.set_title(f"{paper.FIGURE5.get(metric, metric)} {arrow(metric)}", fontsize=10)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=6.5, loc="best", framealpha=0.8)
    fig.tight_layout()
    return save(fig, stem)


def _family_order(families) -> list[str]:
    """Transfusion, then Chameleon, then any other family by name: the same order in every figure."""
    return sorted(set(families), key=lambda f: (list(COLORS).index(f) if f in COLORS else len(COLORS), str(f)))


def training_curves(curves: dict[str, pd.DataFrame], families: dict[str, str], stem: Path,
                    y: str = "loss", x: str = "elements", sizes: dict[str, str] | None = None,
                    smooth: int = 25) -> Path:
    """Training `y` vs `x` per run (curves: run -> metrics.jsonl frame), one panel per family,
    log-log, each run's curve a centred rolling mean over `smooth` steps (one batch of a toy run
    is noisy) coloured by its size (`sizes`: run -> size name), one legend entry per size."""
    sizes = sizes or {r: r for r in families}
    order = sorted(set(sizes.values()), key=lambda z: (_size_key(z), z))
    cmap = plt.get_cmap("viridis", max(2, len(order)))
    colour = {z: cmap(i) for i, z in enumerate(order)}
    fams = _family_order(families.values())
    fig, axes = _grid(max(1, len(fams)), w=5.0, h=3.4)
    for ax, fam in zip(axes, fams):
        seen = set()
        for run in sorted(r for r, f in families.items() if f == fam):
            c = curves.get(run)
            if c is None or x not in c or y not in c:
                continue
            c = c.dropna(subset=[x, y])
            z = sizes.get(run, run)
            ys = c[y].rolling(smooth, center=True, min_periods=1).mean()
            ax.plot(c[x], ys, lw=0.9, color=colour.get(z, "gray"), alpha=0.85, label=None if z in seen else z)
            seen.add(z)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{x} seen")
        ax.set_ylabel(f"training {y} (rolling mean of {smooth} steps)")
        ax.set_title(fam, fontsize=10, color=COLORS.get(fam, "black"))
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, title="size", title_fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def _size_key(name: str) -> float:
    """cpu-0.11M -> 0.11e6, 0.76B -> 0.76e9: sizes sorted by their parameter count."""
    m = re.search(r"([0-9.]+)([MBk])", str(name))
    return float(m.group(1)) * {"k": 1e3, "M": 1e6, "B": 1e9}[m.group(2)] if m else math.inf


def isoflop_curves(N, y, budget_ids, fit: dict, stem: Path, metric: str = "loss") -> Path:
    """Left: metric vs N per budget with each N*; right: N*(C) with the fitted power law."""
    N, y, budget_ids = map(np.asarray, (N, y, budget_ids))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("plasma", max(2, len(np.unique(budget_ids))))
    for j, b in enumerate(np.unique(budget_ids)):
        sel = budget_ids == b
        o = np.argsort(N[sel])
        ax.plot(N[sel][o], y[sel][o], "o-", ms=3, lw=0.6, color=cmap(j))
    for r in fit["budgets"]:
        ax.plot([r["N_star"]], [r["loss_star"]], "k*", ms=7)
    ax.set_xscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel(metric)
    ax.set_title("IsoFLOP profiles (* = parabola minimum)", fontsize=9)
    C = np.array([r["C"] for r in fit["budgets"]])
    ns = np.array([r["N_star"] for r in fit["budgets"]])
    ax2.scatter(C, ns, color="k", s=14)
    cs = np.geomspace(C.min(), C.max(), 50)
    ax2.plot(cs, fit["n_coef"] * cs ** fit["a"], color="tab:red", label=f"N* ~ C^{fit['a']:.3f}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("C (FLOPs)")
    ax2.set_ylabel("N*")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.grid(True, which="both", lw=0.3, alpha=0.5)
    fig.tight_layout()
    return save(fig, stem)
