"""Which peak learning rate each family wants at toy scale, from an lr sweep's runs:

    python analysis/lr.py results/lr-sweep [--json]

Per family and size it prints the held-out losses at each learning rate of the grid, and per
metric the best one. The best one is interpolated by a parabola in log10(lr) through the best
grid point and its two neighbours, and flagged "edge" when the best point is at the end of
the grid, where the optimum may lie beyond it. Per family and metric it then fits
lr*(N) = a * N^b over the sizes whose optimum is interior (an edge is a bound, not a value),
N non-embedding, as Porian et al. 2024 fit the learning rate
against N. That is the documented rule for the sizes in between.

Metrics: the text loss on held-out C4 (text_c4/lm, the same for both families) and each
family's held-out image loss (Transfusion images_val/diffusion, Chameleon images_val/lm_image).
They are reported apart because a learning rate good for one may be poor for the other.

Both families' interior C4 optima are also fitted together ("shared": one law for both, what
grid/toy_lr.py uses, so that a comparison of families holds the learning rate fixed). Per size
and family it reports what sharing costs: the parabola's C4 loss at the shared rate minus its
minimum (nats per token; the parabola is the one through the best grid point's neighbourhood).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from analysis.collect import collect

METRICS = {"transfusion": ("text_c4/lm", "images_val/diffusion"), "chameleon": ("text_c4/lm", "images_val/lm_image")}


def best_lr(lrs: list[float], values: list[float]) -> tuple[float, bool]:
    """(interpolated best lr, at the grid's edge) for losses `values` at learning rates `lrs`
    (sorted ascending): a parabola in log10(lr) through the best point and its neighbours."""
    i = int(np.argmin(values))
    if i == 0 or i == len(lrs) - 1:
        return lrs[i], True
    x = np.log10(lrs[i - 1:i + 2])
    a, b, _ = np.polyfit(x, values[i - 1:i + 2], 2)
    return (10 ** (-b / (2 * a)) if a > 0 else lrs[i]), False


def loss_at(lrs: list[float], values: list[float], lr: float) -> float:
    """The C4 loss at `lr` read off the parabola in log10(lr) through the best grid point and its
    neighbours (the one best_lr takes its vertex from); nan for an optimum at the grid's edge."""
    i = int(np.argmin(values))
    if i == 0 or i == len(lrs) - 1:
        return float("nan")
    coef = np.polyfit(np.log10(lrs[i - 1:i + 2]), values[i - 1:i + 2], 2)
    return float(np.polyval(coef, math.log10(lr)))


SHARED_METRIC = "text_c4/lm"


def shared_fit(res: dict) -> dict:
    """One lr*(N) law over both families' interior optima of SHARED_METRIC, and per family and
    size the cost of using it instead of the family's own optimum."""
    pts = [(e["N"], e[SHARED_METRIC]["best_lr"]) for r in res.values() for e in r["sizes"].values()
           if not e[SHARED_METRIC]["edge"]]
    if len({n for n, _ in pts}) < 2:
        return {"none": f"{len(pts)} interior optimum/optima over fewer than 2 sizes"}
    a, b = lr_power_law([p[0] for p in pts], [p[1] for p in pts])
    cost = {}
    for family, r in res.items():
        for size, e in r["sizes"].items():
            lr = a * e["N"] ** b
            m = e[SHARED_METRIC]
            own = min(m["values"]) if m["edge"] else loss_at(e["lr"], m["values"], m["best_lr"])
            cost[f"{family} {size}"] = {"lr": lr, "own_lr": m["best_lr"], "edge": m["edge"],
                                        "cost": loss_at(e["lr"], m["values"], lr) - own}
    return {"a": a, "b": b, "points": len(pts), "cost": cost}


def lr_power_law(ns: list[float], lrs: list[float]) -> tuple[float, float]:
    """(a, b) of lr = a * N^b, least squares in log-log (exact through two sizes)."""
    b, log_a = np.polyfit(np.log(ns), np.log(lrs), 1)
    return float(math.exp(log_a)), float(b)


def analyse(table) -> dict:
    out: dict = {}
    for family, fam in table.groupby("family"):
        res: dict = {"sizes": {}, "fits": {}}
        for size, rows in fam.groupby("size"):
            rows = rows.sort_values("optim.lr")
            lrs = rows["optim.lr"].astype(float).tolist()
            entry = {"N": float(rows["n_nonembedding"].iloc[0]), "lr": lrs}
            for m in METRICS[family]:
                vals = rows[m].astype(float).tolist()
                lr_star, edge = best_lr(lrs, vals)
                entry[m] = {"values": vals, "best_lr": lr_star, "edge": edge}
            res["sizes"][size] = entry
        for m in METRICS[family]:
            # An optimum at the grid's edge is a bound, not a value: it does not enter the fit.
            pts = sorted((e["N"], e[m]["best_lr"]) for e in res["sizes"].values() if not e[m]["edge"])
            edges = sorted(size for size, e in res["sizes"].items() if e[m]["edge"])
            if len(pts) >= 2:
                a, b = lr_power_law([p[0] for p in pts], [p[1] for p in pts])
                res["fits"][m] = {"a": a, "b": b, "sizes": len(pts), "left_out_at_edge": edges}
            else:
                res["fits"][m] = {"none": f"{len(pts)} size(s) with an interior optimum; at the grid's edge: "
                                          f"{', '.join(edges) or '-'} (widen the grid there)"}
        out[family] = res
    if out:
        out["shared"] = shared_fit(out)
    return out


def to_markdown(res: dict) -> str:
    lines = []
    for family, r in res.items():
        if family == "shared":
            continue
        lines.append(f"### {family}")
        for size, e in r["sizes"].items():
            head = "| metric | " + " | ".join(f"lr {lr:g}" for lr in e["lr"]) + " | best lr |"
            lines += [f"{size} (N = {e['N']:,.0f})", "", head, "|" + "---|" * (len(e["lr"]) + 2)]
            for m in METRICS[family]:
                v = e[m]
                lines.append(f"| {m} | " + " | ".join(f"{x:.4f}" for x in v["values"]) +
                             f" | {v['best_lr']:.3g}{' (edge)' if v['edge'] else ''} |")
            lines.append("")
        for m, f in r["fits"].items():
            if "none" in f:
                lines.append(f"- {m}: no lr*(N) fit: {f['none']}")
            else:
                lines.append(f"- {m}: lr*(N) = {f['a']:.3g} * N^{f['b']:.3f} (over {f['sizes']} sizes)")
        lines.append("")
    sh = res.get("shared", {})
    if "none" in sh:
        lines.append(f"shared {SHARED_METRIC} law: none ({sh['none']})")
    elif sh:
        lines += [f"shared {SHARED_METRIC} law, both families: lr*(N) = {sh['a']:.3g} * N^{sh['b']:.3f} "
                  f"(over {sh['points']} interior optima)", "",
                  "| run | shared lr | own best lr | C4 loss cost of sharing (nats) |", "|---|---|---|---|"]
        for k, c in sh["cost"].items():
            own = f"{c['own_lr']:.3g}{' (edge)' if c['edge'] else ''}"
            lines.append(f"| {k} | {c['lr']:.3g} | {own} | {c['cost']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    table, skipped = collect([args.results])
    if table.empty or "optim.lr" not in table:
        print(f"error: no finished runs with a learning rate under {args.results}: python grid/launch.py "
              "--sweep lr-sweep", file=sys.stderr)
        return 2
    res = analyse(table)
    print(json.dumps(res, indent=1) if args.json else to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
