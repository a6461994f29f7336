"""Image-generation parity across guidance scales, from what grid.guidance measured on a sweep:

    python analysis/guidance.py results/toy-paper [--guidance FILE] [--bootstrap K]

The sweep's evals.json hold one guidance scale for every run (the paper's 5; evals/config.py).
grid/guidance.py scores finished runs at other scales; this joins its rows (default: the sweep's
guidance*.json) with the sweep's runs (analysis/collect.py) and prints, for each scale, FID and
the GenEval analogue at each family's largest run, and their parity FLOP ratios with 95%
intervals computed as analysis/findings.py computes the committed ones (analysis/parity.py; the
target's seed noise from the sweep's own seed replicates, analysis/seeds.py). The evals.json
scale is a row too, from the runs themselves, so the two sources can be compared where they
overlap. A markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from analysis.collect import collect
from analysis.parity import family_parity
from analysis.seeds import seed_sigma
from analysis.tables import to_markdown

METRICS = ("t2i/fid", "t2i/geneval_overall")
GUIDANCE_FILE = "guidance.json"  # grid.guidance's rows for a sweep, committed beside its runs
# Runs that land later are scored into a file of their own (guidance-<what>.json), so that no
# committed file is rewritten and each keeps the code and machine that wrote it.
GUIDANCE_GLOB = "guidance*.json"


def guidance_files(sweep_dir: Path) -> list[Path]:
    """The grid.guidance files committed beside a sweep's runs, in name order."""
    return sorted(Path(sweep_dir).glob(GUIDANCE_GLOB))


def read_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            rows += json.loads(Path(path).read_text())["rows"]
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file: run `python -m grid.guidance RUN_DIR... --out {path}` first") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}: not grid.guidance's JSON (an object with 'rows')") from None
    return rows


def at_scale(table: pd.DataFrame, rows: list[dict], scale: float) -> pd.DataFrame:
    """The runs of `table` with their t2i/* values replaced by grid.guidance's at `scale`; runs
    it did not score there are dropped."""
    by_run = {Path(r["run"]).name: r for r in rows if r["cfg_scale"] == scale}
    t = table[table["run"].isin(by_run)].copy()
    for key in {k for r in by_run.values() for k in r if k.startswith("t2i/")} & set(t.columns):
        t[key] = [by_run[name].get(key, math.nan) for name in t["run"]]
    return t


def _largest(t: pd.DataFrame, family: str, metric: str) -> str:
    f = t[t["family"] == family]
    if f.empty or metric not in f:
        return "–"
    top = f[f["flops"] == f["flops"].max()]
    return f"{top[metric].mean():.3g}"


def scale_row(t: pd.DataFrame, scale: str, n_runs: int, k: int) -> dict:
    row = {"guidance": scale, "runs": n_runs}
    for metric in METRICS:
        name = metric.split("/")[-1]
        row[f"{name} T (largest)"] = _largest(t, "transfusion", metric)
        row[f"{name} C (largest)"] = _largest(t, "chameleon", metric)
        if metric not in t or t[metric].isna().all():
            row[f"{name} parity [95%]"] = "–"
            continue
        p = family_parity(t, metric, k, seed_sigma(t, metric))
        lo, hi = p.get("interval", (math.nan, math.nan))
        row[f"{name} parity [95%]"] = f"{p['ratio']:.3g} [{lo:.3g}, {hi:.3g}]" if math.isfinite(p["ratio"]) \
            else f"– ({p.get('note', 'no ratio')})"
    return row


def own_scales(table: pd.DataFrame) -> list[float]:
    """The guidance scales the runs' evals.json were scored at (their config's eval.cfg_scale)."""
    if "eval.cfg_scale" not in table:
        return []
    return sorted({float(s) for s in table["eval.cfg_scale"].dropna()})


def guidance_table(table: pd.DataFrame, rows: list[dict], k: int = 200) -> pd.DataFrame:
    own = ", ".join(f"{s:g}" for s in own_scales(table)) or "?"
    out = [scale_row(table, f"{own} (evals.json)", len(table), k)]
    for scale in sorted({r["cfg_scale"] for r in rows}):
        t = at_scale(table, rows, scale)
        out.append(scale_row(t, f"{scale:g} (grid.guidance)", len(t), k))
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help="a sweep's results dir, e.g. results/toy-paper")
    ap.add_argument("--guidance", type=Path, nargs="+", default=None, help="default: SWEEP/guidance*.json")
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples for the parity intervals")
    args = ap.parse_args(argv)
    try:
        rows = read_rows(args.guidance or guidance_files(args.sweep) or [args.sweep / GUIDANCE_FILE])
        table, _ = collect([args.sweep])
        if table.empty:
            raise ValueError(f"{args.sweep}: no finished runs")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(guidance_table(table, rows, args.bootstrap)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
