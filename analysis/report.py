"""Everything from results dirs in one go: `python analysis/report.py RESULTS_DIR... [--out DIR]`.

Writes to --out (default ./report): table.csv (the tidy run table), findings.md (the paper's
findings judged on these runs: analysis/findings.py), fits.json, parity.csv, figures
(figure5_*, curves_*, isoflop_* as PNG + PDF), tables (table3_*, ablation-* as .md + .tex),
report.md and a self-contained report.html (figures embedded as base64). One progress line per
step, and a progress bar with an ETA over the fits, go to stdout; runs that could not be used
are named on stderr and listed in the report. The report says which commits and machines wrote
the runs (their status.json).

It fits what its figures and tables show (the paper's Figure 5 benchmarks, analysis/paper.py):
their trendlines and parity ratios, and the Chinchilla L(N, D) and IsoFLOP N*(C) laws of the C4
loss. `--all` fits every metric with every form (the power law, Chinchilla with its sensitivity
to the Huber delta, IsoFLOP) and tables every metric; it is much slower.

Compute is C = 6 N D (paper sec. 4.2; it ignores attention FLOPs on purpose) with D = all
training elements (text tokens, BOI/EOI, image patches or codes) and N chosen by --n-def:
non-embedding parameters by default (Kaplan et al. 2020), or with embeddings, or with the patch
encoder/decoder. Sweeps named ablation-* become ablation tables; all others are scaling sweeps.

A metric's interval and reference values (<key>_lo/_hi, <key>_floor_real, <key>_ref_<name>;
evals/intervals.py) are shown beside it in every table cell and are not fitted themselves.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from grid.ablations import PAPER_TABLE
from grid.family import FAMILIES  # the names only: grid/family.py imports no torch

from tqdm import tqdm

from analysis import paper, plots
from analysis.collect import collect, metric_columns, read_curve
from analysis.fit import FitError, budget_ids, fit_chinchilla, fit_isoflop, fit_power, fit_trendline
from analysis.findings import findings
from analysis.metrics import direction, order_metrics
from analysis.parity import parity
from analysis.seeds import seed_sigma
from analysis.tables import ABLATION_KNOBS, ablation_table, main_metrics, table3, to_latex, to_markdown

FLOORS_NOTE = ("Each cell shows a metric's value, its 95% interval in brackets where the run recorded one, and in "
               "parentheses its references at the same sample size and feature network: floor_real is what real "
               "images score against real images (the best a model can reach), ref_random the family's own "
               "autoencoder decoding random latents or codes, ref_black all-black images, ref_shuffled the "
               "references of other images, ref_constant one caption for every image, ref_true the references "
               "themselves, ref_unigram a context-free model of the same text. A score that does not beat its "
               "chance references measures nothing.")

FINDINGS_NOTE = ("Each of the paper's findings as a ratio whose side of 1 is the paper's claim, by the one primary "
                 "analysis analysis/primary.py fixes for it (the estimator column labels anything else secondary or "
                 "exploratory), with a converged 95% interval: reproduced when the whole interval lies on the paper's "
                 "side of 1, not reproduced when it lies on the other side, inconclusive when it holds 1. \"paper's "
                 "value\" says whether the paper's number lies inside our interval, \"extrapolated\" what share of the "
                 "bootstrap draws needs compute outside the runs. A ratio whose runs do not beat the metric's chance "
                 "reference is not formed. Our models are 10^3-10^4 times smaller than the paper's, so an excluded "
                 "paper value is a finding about scale.")
# The held-out loss the saturating laws are fitted to (nats per token; the first one the runs recorded).
LOSS_METRICS = ("text_c4/nll", "text_c4/lm")
# Ablation tables show the figure's benchmarks and the checked captions (a powered captioning measure).
ABLATION_EXTRA = ("caption/correct",)

N_DEFS = {"nonembedding": ("n_nonembedding", "flops"), "with_embeddings": ("n_with_embeddings", "flops_with_embeddings"),
          "with_patch": ("n_with_patch", "flops_with_patch")}


class Report:
    """Collects blocks (headings, text, tables, figures) and renders them as markdown and HTML."""

    def __init__(self, out: Path) -> None:
        self.out, self.blocks, self.t0 = out, [], time.time()

    def step(self, msg: str) -> None:
        print(f"[report {time.time() - self.t0:6.1f}s] {msg}", flush=True)

    def add(self, kind: str, value, caption: str = "", css: str = "") -> None:
        self.blocks.append((kind, value, caption, css))

    def markdown(self) -> str:
        parts = []
        for kind, v, cap, _ in self.blocks:
            if kind in ("h1", "h2", "h3"):
                parts.append("#" * int(kind[1]) + " " + v)
            elif kind == "p":
                parts.append(v)
            elif kind == "table":
                parts.append((f"*{cap}*\n\n" if cap else "") + to_markdown(v))
            elif kind == "img":
                parts.append(f"![{cap}]({Path(v).relative_to(self.out)})")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = []
        for kind, v, cap, css in self.blocks:
            if kind in ("h1", "h2", "h3"):
                body.append(f"<{kind}>{html.escape(v)}</{kind}>")
            elif kind == "p":
                body.append("<p>" + html.escape(v).replace("\n", "<br>") + "</p>")
            elif kind == "table":
                body.append((f"<p><em>{html.escape(cap)}</em></p>" if cap else "")
                            + _verdicts(v.to_html(index=False, border=0, classes=css or None, table_id=css or None)))
            elif kind == "img":
                data = base64.b64encode(Path(v).read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(cap)}">'
                            f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
                 "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
                 "table.findings td{text-align:left}table.findings td:nth-child(5){font-weight:bold}")
        return f"<!doctype html><html><head><meta charset='utf-8'><title>Scaling report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _verdicts(table_html: str) -> str:
    """The findings' verdicts in colour, so the table reads at a glance."""
    for verdict, colour in (("reproduced", "#1a7f37"), ("not reproduced", "#cf222e"), ("inconclusive", "#6e7781")):
        table_html = table_html.replace(f"<td>{verdict}</td>", f'<td style="color:{colour}">{verdict}</td>')
    return table_html


def _try(fn, *args, **kw) -> dict:
    try:
        return fn(*args, **kw)
    except (FitError, ValueError, np.linalg.LinAlgError) as exc:
        return {"error": str(exc)}


def _chinchilla(N, D, y, k: int, sensitivity: bool) -> dict:
    fit = _try(fit_chinchilla, N, D, y, bootstrap_k=k)
    if sensitivity and "error" not in fit:  # the data term is weakly constrained: show delta sensitivity
        fit["delta_sensitivity"] = {str(d): {p: _try(fit_chinchilla, N, D, y, delta=d)[p]
                                             for p in ("E", "A", "B", "alpha", "beta")} for d in (1e-4, 1e-2)}
    return fit


def _fit_tasks(g: pd.DataFrame, metrics: list[str], loss: str | None, n_col: str, c_col: str, k: int, k_fits: int,
               every: bool) -> list[tuple[str, str, str, object]]:
    """(form, metric, family, thunk) for one scaling sweep: trendlines for the figure's metrics;
    the saturating laws (Chinchilla L(N, D), IsoFLOP N*(C)) for the C4 loss; with `every`, every
    form for every metric (the power law, Chinchilla with its delta sensitivity, IsoFLOP)."""
    tasks = []
    for m in metrics:
        higher, _ = direction(m)
        for fam, f in g.groupby("family"):
            f = f[f[m].notna() & (f[m] > 0)]
            if f.empty:
                continue
            tasks.append(("trendline", m, fam, lambda f=f, m=m: _try(fit_trendline, f[c_col], f[m], bootstrap_k=k)))
            if higher or not (every or m == loss):  # saturating laws and IsoFLOP minima: lower-is-better only
                continue
            if every:
                tasks.append(("power", m, fam, lambda f=f, m=m: _try(fit_power, f[c_col], f[m], bootstrap_k=k_fits)))
            tasks.append(("chinchilla", m, fam, lambda f=f, m=m: _chinchilla(f[n_col], f["D"], f[m], k_fits, every)))
            tasks.append(("isoflop", m, fam, lambda f=f, m=m: _try(fit_isoflop, f[n_col], f[m], C=f[c_col], D=f["D"],
                                                                   bootstrap_k=k_fits)))
    return tasks


def _describe(fit: dict, keys: tuple[str, ...]) -> str:
    if "error" in fit:
        return f"not fitted: {fit['error']}"
    iv, bound = fit.get("intervals", {}), set(fit.get("at_bound", ()))
    return ", ".join(f"{p} at its bound (not determined)" if p in bound else
                     f"{p}={fit[p]:.4g}" + (f" [{iv[p][0]:.3g}, {iv[p][1]:.3g}]" if p in iv else "") for p in keys)


def _provenance(table: pd.DataFrame) -> pd.DataFrame:
    """Per sweep: which commits and machines wrote its runs, and how many each (status.json)."""
    cols = ["code_commit", "code_dirty", "machine_host", "machine_cpu", "machine_cores", "machine_torch", "machine_gpu"]
    t = table.reindex(columns=["sweep", *cols]).astype(object).where(lambda d: d.notna(), "not recorded")
    t["machine_cores"] = t["machine_cores"].map(lambda v: int(v) if isinstance(v, float) else v)  # 2, not 2.0
    out = t.groupby(["sweep", *cols], dropna=False).size().reset_index(name="runs")
    return out.rename(columns={c: c.replace("_", " ", 1) for c in cols})


def _figure_metrics(metrics: list[str], every: bool) -> list[str]:
    """The paper's Figure 5 benchmarks that the runs recorded (every metric with --all, or when
    the runs recorded none of them)."""
    shown = [m for m in paper.FIGURE5 if m in metrics]
    return metrics if every or not shown else shown


def _loss_metric(metrics: list[str]) -> str | None:
    return next((m for m in LOSS_METRICS if m in metrics), None)


def build(results: list[Path], out: Path, n_def: str = "nonembedding", bootstrap_k: int = 200,
          bootstrap_fits: int = 0, every: bool = False) -> Path:
    """Write the whole report under `out`; returns the path of report.html. `every`: fit every
    metric with every form and table every metric (slow; the default fits what is shown)."""
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    n_col, c_col = N_DEFS[n_def]
    rep.step(f"collecting runs from {', '.join(map(str, results))}")
    table, skipped = collect(results)
    rep.step(f"collected {len(table)} finished runs, skipped {len(skipped)}")
    rep.add("h1", "Scaling report")
    rep.add("p", f"Runs from {', '.join(map(str, results))}: {len(table)} used, {len(skipped)} skipped. "
                 f"Compute C = 6 N D with N = {n_col} and D = all training elements (text tokens, BOI/EOI, "
                 "image patches or codes); attention FLOPs are left out, as in the paper.")
    if skipped:
        rep.add("table", pd.DataFrame([{"run": s.run, "reason": s.reason} for s in skipped]), "skipped runs")
    if table.empty:
        rep.add("p", "No finished run could be read: nothing to fit.")
        table.to_csv(out / "table.csv", index=False)
        (out / "fits.json").write_text("{}\n")
        pd.DataFrame().to_csv(out / "parity.csv", index=False)
    else:
        if c_col not in table or table[c_col].isna().all():
            raise SystemExit(f"error: no run records {c_col}; try --n-def nonembedding")
        table.to_csv(out / "table.csv", index=False)
        rep.add("table", _provenance(table), "what wrote the runs: code commit (and whether its tracked files were edited) "
                                             "and machine, from each run's status.json")
        metrics = order_metrics(main_metrics(metric_columns(table)))  # intervals and floors ride along
        shown = _figure_metrics(metrics, every)
        rep.step("judging the paper's findings")
        found = findings(table, bootstrap_k, given_only=True, skipped=skipped)
        (out / "findings.md").write_text(to_markdown(found) if len(found) else "")
        rep.add("h2", "Findings")
        rep.add("p", FINDINGS_NOTE)
        if len(found):
            rep.add("table", found, "the paper's findings on these runs", css="findings")
        if found.attrs["left_out"]:
            rep.add("p", f"Judged on sweeps not given here: {', '.join(found.attrs['left_out'])} "
                         "(python analysis/report.py results/ judges every finding).")
        rep.add("p", FLOORS_NOTE)
        unknown = [m for m in shown if not direction(m)[1]]
        if unknown:
            rep.add("p", "Direction unknown, treated as lower-is-better: " + ", ".join(unknown))
        all_fits, parity_rows = {}, []
        for sweep in sorted(s for s in table["sweep"].unique() if s not in ABLATION_KNOBS and not s.startswith("ablation")):
            g = table[table["sweep"] == sweep]
            ms = [m for m in shown if g[m].notna().any()]
            loss = _loss_metric([m for m in metrics if g[m].notna().any()])
            fit_ms = ms + ([loss] if loss and loss not in ms else [])
            tasks = _fit_tasks(g, fit_ms, loss, n_col, c_col, bootstrap_k, bootstrap_fits, every)
            fits: dict = {form: {m: {} for m in fit_ms} for form in ("trendline", "power", "chinchilla", "isoflop")}
            rep.step(f"{sweep}: {len(tasks)} fits and {len(ms)} parity ratios over {len(g)} runs")
            pars = {}
            with tqdm(total=len(tasks) + len(ms), desc=f"[report] {sweep}", unit="fit", file=sys.stdout,
                      mininterval=0.5, dynamic_ncols=False, ncols=90) as bar:
                for form, m, fam, thunk in tasks:
                    fits[form][m][fam] = thunk()
                    bar.update()
                for m in ms:
                    higher, known = direction(m)
                    p = _try(parity, g, m, "family", FAMILIES[0], FAMILIES[1], c_col, higher, bootstrap_k,
                             seed_sigma=seed_sigma(g, m))
                    bar.update()
                    if "error" not in p:
                        pars[m] = p
                    parity_rows.append({"sweep": sweep, "metric": m, "higher_is_better": higher, "direction_known": known,
                                        "ratio": p.get("ratio"), "lo": p.get("interval", [None, None])[0],
                                        "hi": p.get("interval", [None, None])[1], "C_b": p.get("C_b"), "y_b": p.get("y_b"),
                                        "seed_sigma": p.get("bootstrap", {}).get("seed_sigma"),
                                        "paper": paper.PARITY.get(m), "note": p.get("note") or p.get("error", "")})
            all_fits[sweep] = fits
            rep.add("h2", f"Scaling sweep {sweep}")
            t3 = table3(g, ms, pars, c_col)
            (out / f"table3_{sweep}.md").write_text(to_markdown(t3))
            (out / f"table3_{sweep}.tex").write_text(to_latex(t3, f"Largest runs and parity FLOP ratios ({sweep})", f"tab:table3-{sweep}"))
            rep.add("table", t3, "Table 3 analogue: largest run of each family; parity FLOP ratio transfusion/chameleon with 95% bootstrap "
                               "interval (Transfusion's runs resampled, the target redrawn with the seed noise measured "
                               "across the smallest size's seeds; analysis/seeds.py)")
            rep.step(f"{sweep}: figures")
            rep.add("img", plots.figure5(g, ms, fits["trendline"], pars, out / f"figure5_{sweep}", c_col),
                    "Figure 5 analogue: each benchmark against training FLOPs, log-log, both families with their "
                    "trendlines and 95% intervals; dashed lines are the benchmark's floors and chance levels; the "
                    "filled star is our parity point, the hollow one where the paper's parity ratio would put it")
            curves = {r: read_curve(Path(p)) for r, p in zip(g["run"], g["path"])}
            rep.add("img", plots.training_curves(curves, dict(zip(g["run"], g["family"])), out / f"curves_{sweep}",
                                                     sizes=dict(zip(g["run"], g["size"]))),
                    "training loss against elements seen, one line per run")
            for m, per_fam in fits["isoflop"].items():
                for fam, iso in per_fam.items():
                    if "error" not in iso:
                        f = g[(g["family"] == fam) & g[m].notna()]
                        rep.add("img", plots.isoflop_curves(f[n_col], f[m], budget_ids(f[c_col]), iso, out / f"isoflop_{sweep}_{fam}_{m.replace('/', '_')}", m),
                                f"IsoFLOP {fam} {m}")
            lines = []
            for m in fit_ms:
                for fam in sorted(fits["trendline"][m]):
                    lines.append(f"{m} / {fam}: trendline {_describe(fits['trendline'][m][fam], ('slope', 'intercept', 'r2'))}")
                    for form, keys in (("power", ("E", "A", "alpha")), ("chinchilla", ("E", "A", "B", "alpha", "beta", "a")),
                                       ("isoflop", ("a", "b"))):
                        if fam in fits[form][m]:
                            lines.append(f"{m} / {fam}: {form} {_describe(fits[form][m][fam], keys)}")
            rep.add("p", "\n".join(lines))
        (out / "fits.json").write_text(json.dumps(all_fits, indent=1, default=float) + "\n")
        pd.DataFrame(parity_rows).to_csv(out / "parity.csv", index=False)
        for sweep in sorted(s for s in table["sweep"].unique() if s in ABLATION_KNOBS):
            rep.step(f"{sweep}: ablation table")
            t = ablation_table(table, sweep, metrics if every else [*shown, *ABLATION_EXTRA])
            num = PAPER_TABLE.get(sweep)
            cap = f"{sweep}" + (f" (paper Table {num} analogue)" if num else "")
            (out / f"{sweep}.md").write_text(to_markdown(t))
            (out / f"{sweep}.tex").write_text(to_latex(t, cap, f"tab:{sweep}"))
            rep.add("h2", f"Ablation {sweep}")
            rep.add("table", t, cap)
    rep.step("writing report.md and report.html")
    (out / "report.md").write_text(rep.markdown())
    (out / "report.html").write_text(rep.html())
    rep.step(f"done: {out / 'report.html'}")
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="results dirs (roots, sweep dirs or run dirs)")
    ap.add_argument("--out", type=Path, default=Path("report"))
    ap.add_argument("--n-def", choices=list(N_DEFS), default="nonembedding", help="which N enters C = 6ND")
    ap.add_argument("--bootstrap", type=int, default=200, metavar="K",
                    help="resamples for trendline and parity intervals (0: none)")
    ap.add_argument("--bootstrap-fits", type=int, default=0, metavar="K",
                    help="resamples for power-law, Chinchilla and IsoFLOP intervals (slower; 0: none)")
    ap.add_argument("--all", action="store_true", dest="every",
                    help="fit and table every metric with every form (slow; default: what the figures and tables show)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    build(args.results, args.out, args.n_def, args.bootstrap, args.bootstrap_fits, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
