"""Does each family condition on the other modality? The four checks of issue 14, per run:

    python analysis/conditioning.py results/world-calibration [--json]
    python analysis/conditioning.py results/toy-paper --largest      # only the largest runs

  caption gain   caption NLL with a shuffled image minus with the true one (nats per token,
                 evals/conditioning.py): passes when its 95% interval lies above 0
  eps gain       Transfusion: noise-prediction MSE without the caption minus with it, at t = 500:
                 passes when its interval lies above 0 (Chameleon has no noise prediction)
  t2i checker    GenEval overall on the model's images (data/checker.py decides the prompt's
                 clauses on pixels): passes when its interval lies above the same prompts
                 decided on real images of other scenes (`_ref_shuffled`, chance)
  caption check  the share of greedy captions true of their image (evals/caption_truth.py):
                 passes when its interval lies above another image's real caption (chance)
  distinct       distinct greedy captions / captions: passes at >= 0.5

Rows are grouped by what the runs vary (world, family, size, D); a row is one run, its
intervals the run's own (bootstrap over images).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from analysis.collect import collect

# check -> (value key, chance key or None (0), family it applies to or None (both))
CHECKS = {
    "caption gain": ("cond/caption_image_gain", None, None),
    "eps gain t500": ("cond/eps_text_gain_t500", None, "transfusion"),
    "t2i checker": ("t2i/geneval_overall", "t2i/geneval_overall_ref_shuffled", None),
    "caption check": ("caption/correct", "caption/correct_ref_shuffled", None),
}
DISTINCT, DISTINCT_MIN = "caption/distinct", 0.5
GROUP = ("data.captions", "data.text_share", "family", "size", "D", "seed")


def _num(row, key: str) -> float:
    v = row.get(key) if hasattr(row, "get") else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def judge(row) -> dict:
    """{check: {value, lo, hi, chance, passed}} for one run's row of the collected table."""
    out: dict = {}
    for name, (key, chance_key, family) in CHECKS.items():
        if family is not None and row["family"] != family:
            continue
        value, lo, hi = _num(row, key), _num(row, f"{key}_lo"), _num(row, f"{key}_hi")
        chance = _num(row, chance_key) if chance_key else 0.0
        out[name] = {"value": value, "lo": lo, "hi": hi, "chance": chance,
                     "passed": bool(lo > chance) if not (math.isnan(lo) or math.isnan(chance)) else None}
    d = _num(row, DISTINCT)
    out["distinct"] = {"value": d, "passed": bool(d >= DISTINCT_MIN) if not math.isnan(d) else None}
    return out


def _cell(c: dict) -> str:
    if math.isnan(c["value"]):
        return "–"
    text = f"{c['value']:.3g}"
    if "lo" in c and not math.isnan(c["lo"]):
        text += f" [{c['lo']:.3g}, {c['hi']:.3g}]"
    if c.get("chance") not in (None, 0.0) and not math.isnan(c["chance"]):
        text += f" vs {c['chance']:.3g}"
    return text + {True: " ✓", False: " ✗", None: ""}[c["passed"]]


def rows_of(table, largest: bool = False) -> list[dict]:
    if largest:  # per family, the runs at the largest N and the largest D there
        keep = []
        for _, fam in table.groupby("family"):
            top = fam[fam["n_nonembedding"] == fam["n_nonembedding"].max()]
            keep += list(top[top["D"] == top["D"].max()].index)
        table = table.loc[keep]
    cols = [c for c in GROUP if c in table.columns]
    out = []
    for _, row in table.sort_values(cols).iterrows():
        rec = {c: row[c] for c in cols}
        rec["text_c4/ppl"] = _num(row, "text_c4/ppl")
        rec["checks"] = judge(row)
        out.append(rec)
    return out


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "no runs"
    keys = [k for k in rows[0] if k not in ("checks",)]
    names = list(CHECKS) + ["distinct"]
    lines = ["| " + " | ".join(k.split(".")[-1] for k in keys + names) + " |", "|" + "---|" * (len(keys) + len(names))]
    for r in rows:
        cells = [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        cells += [_cell(r["checks"][n]) if n in r["checks"] else "n/a" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--largest", action="store_true", help="only each family's largest-N, largest-D runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    table, _ = collect(args.results)
    if table.empty or "cond/caption_image_gain" not in table:
        print(f"error: no finished runs with the cond benchmark under {', '.join(map(str, args.results))}: "
              "run a sweep whose eval.benchmarks include cond (the default)", file=sys.stderr)
        return 2
    rows = rows_of(table, args.largest)
    print(json.dumps(rows, indent=1, default=str) if args.json else to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
