"""Figures from the collected table: Figure 5 analogue, training curves, IsoFLOP curves.

Every figure is written twice, `<stem>.png` (for report.html) and `<stem>.pdf` (for papers),
with matplotlib's Agg backend (no display needed). Functions return the PNG path.

  figure5          each metric vs FLOPs on log-log axes, both families as points plus their
                   trendlines, the parity point annotated (Transfusion paper Figure 5).
  training_curves  training loss vs elements seen, one line per run, one panel per family.
  isoflop_curves   metric vs N per compute budget with the fitted parabola's N*, and N*(C)
                   with its power law (Hoffmann et al. 2022 Figure 3; Porian et al. 2024).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.fit import trend_value  # noqa: E402
from analysis.metrics import arrow  # noqa: E402

COLORS = {"transfusion": "tab:blue", "chameleon": "tab:orange"}


def _color(family: str, i: int) -> str:
    return COLORS.get(family, f"C{i + 2}")


def save(fig: plt.Figure, stem: Path) -> Path:
    """Write stem.png and stem.pdf, close the figure, return the PNG path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight")
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight")
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


def figure5(table: pd.DataFrame, metrics: list[str], trends: dict, parities: dict, stem: Path,
            c_col: str = "flops", family_col: str = "family") -> Path:
    """Each metric vs compute, families as points + trendlines, parity annotated.

    trends[metric][family] is a fit_trendline dict; parities[metric] a parity() dict (or absent).
    """
    fig, axes = _grid(len(metrics))
    families = sorted(table[family_col].dropna().unique(), key=str)
    for ax, metric in zip(axes, metrics):
        for i, fam in enumerate(families):
            g = table[(table[family_col] == fam) & table[metric].notna()]
            if g.empty:
                continue
            col = _color(str(fam), i)
            ax.scatter(g[c_col], g[metric], s=14, color=col, alpha=0.8, label=str(fam))
            fit = trends.get(metric, {}).get(fam)
            if fit and "slope" in fit:
                cs = np.geomspace(g[c_col].min(), g[c_col].max(), 50)
                ax.plot(cs, trend_value(fit, cs), color=col, lw=1.2)
        p = parities.get(metric)
        if p and math.isfinite(p.get("ratio", math.nan)):
            ax.axhline(p["y_b"], color="gray", lw=0.6, ls=":")
            ax.plot([p["C_a_needed"]], [p["y_b"]], marker="*", color="k", ms=9)
            ax.annotate(f"parity {p['ratio']:.3g}x", (p["C_a_needed"], p["y_b"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
        ax.set_xlabel(f"FLOPs ({c_col})")
        ax.set_title(f"{metric} {arrow(metric)}", fontsize=9)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    if axes:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, stem)


def training_curves(curves: dict[str, pd.DataFrame], families: dict[str, str], stem: Path,
                    y: str = "loss", x: str = "elements") -> Path:
    """Training `y` vs `x` per run (curves: run -> metrics.jsonl frame), one panel per family."""
    fams = sorted(set(families.values()))
    fig, axes = _grid(max(1, len(fams)), w=5.0)
    for ax, fam in zip(axes, fams):
        runs = sorted(r for r, f in families.items() if f == fam)
        cmap = plt.get_cmap("viridis", max(2, len(runs)))
        for j, run in enumerate(runs):
            c = curves.get(run)
            if c is None or x not in c or y not in c:
                continue
            c = c.dropna(subset=[x, y])
            ax.plot(c[x], c[y], lw=0.8, color=cmap(j), label=run if len(runs) <= 12 else None)
        ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(f"training {y}")
        ax.set_title(fam, fontsize=9)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        if len(runs) <= 12:
            ax.legend(fontsize=5)
    fig.tight_layout()
    return save(fig, stem)


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
