"""The paper's findings, judged on our runs: reproduced, not reproduced, or inconclusive.

    python analysis/findings.py results/              # the findings table as markdown
    python analysis/findings.py results --update README.md   # and into the README, between its markers
    rows = findings(table)                            # from analysis.collect's table

Each finding is a ratio whose side of 1 is the paper's claim: a parity FLOP ratio below 1
(Transfusion needs less compute than Chameleon), a causal / bidirectional FID above 1 (the
bidirectional image attention helps), and so on. Ours comes with a 95% interval; the verdict is

    reproduced       the whole interval lies on the paper's side of 1
    not reproduced   the whole interval lies on the other side
    inconclusive     the interval holds 1 (or nothing was measured: the note says what is missing)

Each finding is judged by the one primary analysis analysis/primary.py fixes for its kind; the
"estimator" column names it and labels anything else (the paper's trendline method, other
guidance scales) secondary or exploratory. "paper's value" says whether the paper's number lies
inside our interval, "extrapolated" which share of the bootstrap draws needs compute outside the
runs. A ratio is formed only where both sides beat the metric's chance reference beyond their
intervals (analysis/chance.py); the row says "at chance" otherwise.

Parity ratios: the matched-setting estimator of analysis/paired.py where both families ran the
same settings, with a converged cluster bootstrap (analysis/resample.py), and at two more
definitions of N in the notes; the paper's trendline method (analysis/parity.py) beside it, its
target redrawn with the seed noise of the parity sweep's own seed replicates.

An ablation ratio compares two runs that differ only in the knob. Its interval, in log space,
adds each run's own 95% interval (evals.json `<key>_lo/_hi`: bootstrap over images, Wilson for
accuracies) and the seed noise of one run (analysis/seeds.py, pooled over the scaling sweeps'
seed replicates): a difference that one seed could make is not a finding. A ratio of two such
ratios (does the gap narrow?) adds the four runs' variances. The paper's values are
analysis/paper.py's; our toy models are 10^3-10^4 times smaller, so only the side of 1 is a
verdict, and an excluded paper value is a finding about scale.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import paper
from analysis.collect import NETWORK_METRICS
from analysis.chance import beyond_chance
from analysis.fit import FitError, fit_isoflop, fit_trendline
from analysis.guidance import GUIDANCE_GLOB, at_scale, guidance_files, read_rows
from analysis.paired import PairingError, paired_parity
from analysis.parity import family_parity
from analysis.primary import EXPLORATORY, FLOP_DEFINITIONS, PRIMARY
from analysis.resample import MIN_RESAMPLES
from analysis.seeds import seed_sigma
from analysis.verdicts import Z95, AtChance, Finding, Ratio, fmt3, inside, mc_share, over, pct, sig2, verdict

PARITY_SWEEP = "toy-paper"  # the scaling sweep the parity ratios and exponents come from, where present
ISOFLOP_SWEEP, ISOFLOP_METRIC = "isoflop", "text_c4/nll"
NO_PAPER_VALUE = "no paper value"
# Where the README holds the table (`--update README.md` rewrites what lies between them).
MARKERS = ("<!-- findings: written by `python analysis/findings.py results` -->", "<!-- /findings -->")
HOFFMANN_A = 0.49  # N* ~ C^a, Hoffmann et al. 2022 Table 2 (approach 2): the reference for our IsoFLOP exponent
ISOFLOP_DRAWS = 2000  # each refits a parabola per budget in Python; the exponent is printed to 2 decimals


def _log_se(row: pd.Series, metric: str) -> float:
    """A run's own 95% interval of `metric`, as a log-space standard error (0 when not recorded)."""
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        return 0.0
    return (math.log(hi) - math.log(lo)) / (2 * Z95)


def _pick(g: pd.DataFrame, **where) -> pd.DataFrame:
    sel = pd.Series(True, index=g.index)
    for col, val in where.items():
        col = col.replace("__", ".")
        if col not in g:
            return g.iloc[0:0]
        if val is None:
            sel &= g[col].isna()
        elif isinstance(val, (int, float)):
            sel &= pd.to_numeric(g[col], errors="coerce") == val
        else:
            sel &= g[col].astype(str) == val
    return g[sel]


class Judge:
    """Builds findings from the collected table (module docstring)."""

    def __init__(self, table: pd.DataFrame, bootstrap_k: int = MIN_RESAMPLES, skipped: tuple = ()) -> None:
        self.table, self.k = table, bootstrap_k
        self.skipped = skipped  # analysis.collect.Skipped: runs that did not finish, named where they are missing
        self.rows: list[Finding] = []
        scaling = table[~table["sweep"].astype(str).str.startswith("ablation")] if not table.empty else table
        # toy-paper where it was given; else the scaling sweep with the most runs (the demo, say)
        counts = scaling["sweep"].value_counts() if not scaling.empty else pd.Series(dtype=int)
        self.scaling = PARITY_SWEEP if PARITY_SWEEP in counts or counts.empty else str(counts.index[0])
        self._sigma = {m: seed_sigma(scaling, m) for m in set(paper.FIGURE5) | {"caption/correct"}}
        # parity compares runs of one sweep, so its seed noise is that sweep's (the same number its
        # report shows); the smaller demo's near-chance captions would otherwise widen toy-paper's
        own = scaling[scaling["sweep"] == self.scaling] if not scaling.empty else scaling
        self._parity_sigma = {m: s if math.isfinite(s := seed_sigma(own, m)) else self._sigma.get(m, math.nan)
                              for m in paper.PARITY}

    def sweep(self, name: str) -> pd.DataFrame:
        return self.table[self.table["sweep"] == name] if not self.table.empty else self.table

    def ratio(self, sweep: str, metric: str, a: dict, b: dict) -> Ratio | str:
        """metric(a) / metric(b) over two settings of one ablation sweep; a string says what is missing."""
        g = self.sweep(sweep)
        if g.empty:
            return f"no runs of {sweep}"
        if metric not in g:
            return f"{sweep} records no {metric}"
        ra, rb = _pick(g, **a), _pick(g, **b)
        for r, setting in ((ra, a), (rb, b)):
            if r.empty or r[metric].isna().all():
                why = [f"{x.run.split('/')[-1]}: {x.reason}" for x in self.skipped if x.run.startswith(f"{sweep}/")]
                return f"{sweep}: no finished run with {_setting(setting)}" + (f" (unfinished: {'; '.join(why)})" if why else "")
            if (r[metric] <= 0).any():
                return f"{sweep}: {metric} is {r[metric].min():.3g} at {_setting(setting)} (no log ratio)"
        for r in (ra, rb):
            ok, numbers = beyond_chance(r, metric, self._sigma.get(metric, math.nan))
            if not ok:
                return AtChance(f"not beyond chance: {numbers}")
        sigma = self._sigma.get(metric, math.nan)
        note = f"seed sd {sigma:.2g} (log)" if math.isfinite(sigma) else "no seed replicates: run intervals only"
        sigma = sigma if math.isfinite(sigma) else 0.0

        def part(r: pd.DataFrame) -> tuple[float, float]:
            own = float(np.mean([_log_se(row, metric) for _, row in r.iterrows()]))
            return float(np.log(r[metric]).mean()), math.sqrt(own**2 + sigma**2) / math.sqrt(len(r))

        (la, sa), (lb, sb) = part(ra), part(rb)
        if sa == 0 and sb == 0:
            return f"{metric} has no interval and no seed replicates"
        ratio = Ratio(la - lb, math.hypot(sa, sb), note)
        want = PRIMARY["ablation"].guidance
        scales = set(pd.to_numeric(pd.concat([ra, rb]).get("eval.cfg_scale", pd.Series(dtype=float)), errors="coerce").dropna())
        if metric.startswith("t2i/") and scales and scales != {want}:
            lo, hi = ratio.interval()
            at = ", ".join(f"{v:g}" for v in sorted(scales))
            return (f"measured at guidance {at} only, and the primary is the paper's ablation scale {want:g}; "
                    f"{EXPLORATORY} at {at}: {fmt3(math.exp(ratio.log))} [{fmt3(lo)}, {fmt3(hi)}]")
        return ratio

    def other_network(self, sweep: str, metric: str) -> str:
        """A note where analysis/collect.py withheld this metric from some of the sweep's runs
        because another feature network scored them."""
        if not metric.startswith(NETWORK_METRICS):
            return ""
        n = sum(r.startswith(f"{sweep}/") for r in self.table.attrs.get("other_network", []))
        return f"; {n} run(s) left out: scored with another FID network" if n else ""

    def add(self, finding: str, paper_value: float | None, ours: Ratio | str, paper_above_one: bool,
            basis: str, estimator: str = "matched runs") -> None:
        paper_txt = fmt3(paper_value) if paper_value is not None else "–"
        if isinstance(ours, AtChance):
            self.rows.append(Finding(finding, paper_txt, "at chance", "inconclusive", f"{basis}; {ours}", basis, estimator))
            return
        if isinstance(ours, str):
            self.rows.append(Finding(finding, paper_txt, "–", "inconclusive", f"{basis}; not measured: {ours}", basis,
                                     estimator))
            return
        lo, hi = ours.interval()
        note = f"{basis}; {ours.note}" if ours.note else basis
        self.rows.append(Finding(finding, paper_txt, f"{fmt3(math.exp(ours.log))} [{fmt3(lo)}, {fmt3(hi)}]",
                                 verdict(lo, hi, paper_above_one), note, basis, estimator,
                                 inside(paper_value, lo, hi)))

    # ------------------------------------------------------------------ the findings

    def at_guidance(self, g: pd.DataFrame, scale: float) -> tuple[pd.DataFrame, str]:
        """The runs of g with their t2i/* metrics at guidance `scale`: their own (evals.json) where
        they were scored there, else grid.guidance's rows (the sweep's guidance*.json); an empty
        table and why where neither has it."""
        if g.empty or "eval.cfg_scale" not in g:
            return g, ""
        own = pd.to_numeric(g["eval.cfg_scale"], errors="coerce")
        if (own == scale).all():
            return g, ""
        paths = guidance_files(Path(g["path"].iloc[0]).parent) if "path" in g else []
        if paths:
            t = at_scale(g, read_rows(paths), scale)
            if not t.empty:
                return t, ""
        return g.iloc[0:0], f"no FID at guidance {scale:g} (`python -m grid.guidance` scores finished runs there)"

    def target_runs(self, g: pd.DataFrame) -> pd.DataFrame:
        """The runs at the sweep's largest setting (largest size, its largest budget): where a
        parity is read."""
        top = g.loc[pd.to_numeric(g["flops"]).idxmax()]
        return g[(g["size"] == top["size"]) & (g["D_budget"] == top["D_budget"])]

    def parity_ratios(self) -> None:
        g, sweep, prim = self.sweep(self.scaling), self.scaling, PRIMARY["parity"]
        for metric, value in paper.PARITY.items():
            name = f"parity FLOP ratio, {paper.FIGURE5[metric]} (below 1: Transfusion needs less compute)"
            t, why = self.at_guidance(g, prim.guidance) if metric.startswith("t2i/") else (g, "")
            matched = self.paired_row(name, value, t, sweep, metric, "paired (primary)", why, sensitivity=True)
            self.trendline_row(f"parity FLOP ratio by the paper's trendline method, {paper.FIGURE5[metric]}", value, t,
                               sweep, metric, why, primary=not matched)

    def guidance_parity(self) -> None:
        """FID parity at the other guidance scales grid.guidance measured on the parity sweep (its
        guidance*.json, where committed), labelled exploratory: the primary is the
        paper's 5 (analysis/primary.py)."""
        g, sweep, metric = self.sweep(self.scaling), self.scaling, "t2i/fid"
        paths = guidance_files(Path(g["path"].iloc[0]).parent) if not g.empty and "path" in g else []
        if not paths:
            return
        for scale in sorted({r["cfg_scale"] for r in read_rows(paths)} - {PRIMARY["parity"].guidance}):
            t, why = self.at_guidance(g, scale)
            name = f"parity FLOP ratio, {paper.FIGURE5[metric]}, at guidance {scale:g} ({sweep}/{GUIDANCE_GLOB})"
            self.paired_row(name, None, t, sweep, metric, f"paired; {EXPLORATORY}", why)

    def paired_row(self, name: str, paper_value: float | None, g: pd.DataFrame, sweep: str, metric: str,
                   estimator: str, why: str = "", sensitivity: bool = False) -> bool:
        """One matched-setting parity row (analysis/paired.py), or why there is none; False where
        the runs hold no matched design (the trendline method is then the primary)."""
        paper_txt = fmt3(paper_value) if paper_value is not None else "–"

        def missing(reason: str, ours: str = "–", matched: bool = True) -> bool:
            self.rows.append(Finding(name, paper_txt, ours, "inconclusive", f"{sweep}; {reason}", sweep, estimator))
            return matched

        if why or g.empty or metric not in g:
            return missing(f"not measured: {why or f'no runs of {sweep} with {metric}'}")
        ok, numbers = beyond_chance(self.target_runs(g), metric, self._parity_sigma.get(metric, math.nan))
        if not ok:
            return missing(f"not beyond chance at the compared compute: {numbers}", "at chance")
        try:
            p = paired_parity(g, metric)
        except PairingError as exc:
            return missing(f"not measured: {exc}", matched=False)
        lo, hi = p["interval"]
        iv = p["log_interval"]
        glo, ghi = p["gap_interval"]
        notes = [f"{sweep}, {p['n_pairs']} matched pairs in {p['n_settings']} settings",
                 f"Transfusion / Chameleon {metric} at C={p['C_target']:.2g}: {sig2(p['gap'])} [{sig2(glo)}, {sig2(ghi)}]",
                 f"Transfusion's slope {p['slope_a']:.3f}",
                 f"{iv.resamples} resamples, Monte-Carlo error {mc_share(iv.rel_error())} of the log width"]
        if sensitivity:
            for n_def in ("with_head", "with_patch"):
                try:
                    q = paired_parity(g, metric, c_col=f"flops_{n_def}")
                    notes.append(f"{FLOP_DEFINITIONS[n_def]}: {sig2(q['ratio'])} [{sig2(q['interval'][0])}, "
                                 f"{sig2(q['interval'][1])}]")
                except PairingError as exc:
                    notes.append(f"{FLOP_DEFINITIONS[n_def]}: {exc}")
        self.rows.append(Finding(name, paper_txt, f"{sig2(p['ratio'])} [{sig2(lo)}, {sig2(hi)}]", verdict(lo, hi, False),
                                 "; ".join(notes) + self.other_network(sweep, metric), sweep, estimator,
                                 inside(paper_value, lo, hi), pct(p["extrapolated_share"])))
        return True

    def trendline_row(self, name: str, paper_value: float, g: pd.DataFrame, sweep: str, metric: str, why: str,
                      primary: bool = False) -> None:
        """The paper's trendline parity (analysis/parity.py) with a converged interval: secondary,
        or primary where no setting ran in both families."""
        est = "trendline (paper's; primary: no matched settings)" if primary else "trendline (paper's; secondary)"
        paper_txt = fmt3(paper_value)
        if why or g.empty or metric not in g:
            self.rows.append(Finding(name, paper_txt, "–", "inconclusive", f"{sweep}; not measured: "
                                     f"{why or f'no runs of {sweep} with {metric}'}", sweep, est))
            return
        sigma = self._parity_sigma.get(metric, math.nan)
        p = family_parity(g, metric, self.k, sigma)
        if not math.isfinite(p["ratio"]) or "interval" not in p:
            self.rows.append(Finding(name, paper_txt, "–", "inconclusive",
                                     f"{sweep}; not measured: {p.get('note', 'no interval')}", sweep, est))
            return
        lo, hi = p["interval"]
        b = p["bootstrap"]
        basis = (f"{sweep}, {p['n_a']} + {p['n_b']} runs"
                 + (f"; target seed sd {sigma:.2g} (log)" if math.isfinite(sigma) else "; no seed replicates")
                 + f"; {b['resamples']} resamples, Monte-Carlo error {mc_share(b['rel_mc_error'])} of the log width")
        self.rows.append(Finding(name, paper_txt, f"{sig2(p['ratio'])} [{sig2(lo)}, {sig2(hi)}]", verdict(lo, hi, False),
                                 basis, sweep, est, inside(paper_value, lo, hi), pct(p.get("extrapolated_share", math.nan))))

    def attention(self) -> None:
        s, fid = "ablation-attention", "t2i/fid"
        gaps = {}
        for kind, (causal, bidir) in paper.ATTENTION_FID.items():
            gaps[kind] = self.ratio(s, fid, {"model__image_attention": "causal", "model__patch_kind": kind},
                                    {"model__image_attention": "bidirectional", "model__patch_kind": kind})
        causal, bidir = paper.ATTENTION_FID["linear"]
        self.add("intra-image bidirectional attention helps, linear patches (FID causal / bidirectional)",
                 causal / bidir, gaps["linear"], True, s)
        (lc, lb), (uc, ub) = paper.ATTENTION_FID["linear"], paper.ATTENTION_FID["unet"]
        narrows = over(gaps["linear"], gaps["unet"])
        self.add("with U-Net patches the attention gap shrinks (FID ratio linear / U-Net; paper U-Net ratio 1.01)",
                 (lc / lb) / (uc / ub), narrows, True, s)

    def patch_size(self) -> None:
        s, fid = "ablation-patch", "t2i/fid"
        lin = self.ratio(s, fid, {"model__patch_size": 8, "model__patch_kind": "linear"},
                         {"model__patch_size": 2, "model__patch_kind": "linear"})
        self.add("larger patches cost image quality, linear (FID 8x8 / 2x2)",
                 paper.PATCH_FID["linear"][8] / paper.PATCH_FID["linear"][2], lin, True, s)
        unet = self.ratio(s, fid, {"model__patch_size": 8, "model__patch_kind": "unet"},
                          {"model__patch_size": 2, "model__patch_kind": "unet"})
        both = over(lin, unet)
        p_lin = paper.PATCH_FID["linear"][8] / paper.PATCH_FID["linear"][2]
        p_unet = paper.PATCH_FID["unet"][8] / paper.PATCH_FID["unet"][2]
        self.add(f"U-Net patches hold up at 8x8 (FID 8x8/2x2 linear over U-Net; paper U-Net ratio {fmt3(p_unet)})",
                 p_lin / p_unet, both, True, s)
        c4 = self.ratio(s, "text_c4/ppl", {"model__patch_size": 8, "model__patch_kind": "linear"},
                        {"model__patch_size": 1, "model__patch_kind": "linear"})
        self.add("larger patches cost text, linear (C4 perplexity 8x8 / 1x1)",
                 paper.PATCH_C4_LINEAR[1] / paper.PATCH_C4_LINEAR[0], c4, True, s)

    def encoder_size(self) -> None:
        s, fid = "ablation-encoder-size", "t2i/fid"
        g = self.sweep(s)
        sizes = sorted(g["size"].unique(), key=lambda z: float(g[g["size"] == z]["n_nonembedding"].iloc[0])) if not g.empty else []
        by_size = {z: self.ratio(s, fid, {"size": z, "model__patch_kind": "linear"}, {"size": z, "model__patch_kind": "unet"})
                   for z in sizes}
        (l0, u0), (l1, u1) = paper.ENCODER_FID_BY_SIZE["0.16B"], paper.ENCODER_FID_BY_SIZE["7B"]
        top = by_size[sizes[-1]] if sizes else f"no runs of {s}"
        self.add(f"U-Net beats linear patches (FID linear / U-Net at the largest size{', ' + sizes[-1] if sizes else ''}; "
                 "paper at 7B)", l1 / u1, top, True, s)
        first, last = (by_size[sizes[0]], by_size[sizes[-1]]) if len(sizes) >= 2 else (top, top)
        narrows = over(first, last) if len(sizes) >= 2 or isinstance(top, str) else f"one size only in {s}"
        span = f"{sizes[0]} over {sizes[-1]}" if len(sizes) >= 2 else "smallest over largest size"
        self.add(f"the U-Net's advantage narrows with size (FID ratio linear / U-Net, {span}; paper 0.16B over 7B)",
                 (l0 / u0) / (l1 / u1), narrows, True, s)

    def noise_limit(self) -> None:
        s = "ablation-noise-limit"
        off, on = paper.NOISE_LIMIT_CIDER["0.76B"]
        cider = self.ratio(s, "caption/cider", {"model__noise_limit": 500}, {"model__noise_limit": None})
        self.add("the noise limit helps captioning (CIDEr with t <= 500 / without)", on / off, cider, True, s)
        correct = self.ratio(s, "caption/correct", {"model__noise_limit": 500}, {"model__noise_limit": None})
        self.add("the noise limit helps captioning (checked captions correct, with / without; no paper value)",
                 None, correct, True, s)

    def text_only(self) -> None:
        """Table 4. Primary: the mixed run against the text-only run that saw as many text tokens
        (analysis/primary.py); the text-only run at the mixed run's D (twice the text) is
        secondary, in the notes."""
        s, c4 = "ablation-text-only", "text_c4/ppl"
        g = self.sweep(s)
        mixed_share = 0.5
        d_mixed = float(g[pd.to_numeric(g["data.text_share"], errors="coerce") == mixed_share]["D_budget"].max()) \
            if not g.empty and "data.text_share" in g else math.nan
        cost = {}
        for fam in ("transfusion", "chameleon"):
            mixed = {"family": fam, "data__text_share": mixed_share}
            matched = self.ratio(s, c4, mixed, {"family": fam, "data__text_share": 1.0, "D_budget": round(d_mixed * mixed_share)}) \
                if math.isfinite(d_mixed) else f"no mixed run in {s}"
            equal_d = self.ratio(s, c4, mixed, {"family": fam, "data__text_share": 1.0, "D_budget": d_mixed}) \
                if math.isfinite(d_mixed) else f"no mixed run in {s}"
            cost[fam] = matched
            alone, with_images = paper.TEXT_ONLY_C4[fam]
            second = (f"at equal D (text-only sees twice the text; secondary): {fmt3(math.exp(equal_d.log))} "
                      f"[{fmt3(equal_d.interval()[0])}, {fmt3(equal_d.interval()[1])}]" if isinstance(equal_d, Ratio)
                      else f"at equal D: {equal_d}")
            self.add(f"images cost {fam} text (C4 perplexity with images / text only, equal text tokens)",
                     with_images / alone, matched, True, f"{s}; {second}", PRIMARY["text-only"].estimator)
        (ta, tm), (ca, cm) = paper.TEXT_ONLY_C4["transfusion"], paper.TEXT_ONLY_C4["chameleon"]
        both = over(cost["transfusion"], cost["chameleon"])
        self.add("Transfusion's text cost is below Chameleon's (the two costs' ratio, equal text tokens)",
                 (tm / ta) / (cm / ca), both, False, s, PRIMARY["text-only"].estimator)
        stab = self.ratio(s, c4, {"family": "chameleon", "data__text_share": 1.0, "D_budget": d_mixed},
                          {"family": "transfusion", "data__text_share": 1.0, "D_budget": d_mixed})
        self.add("Chameleon's stability changes cost text (text-only C4 perplexity, Chameleon / Transfusion)",
                 ca / ta, stab, True, s)

    def exponents(self) -> None:
        """One row per benchmark: each family's trendline slope (metric ~ C^slope); one row for
        the IsoFLOP exponent a (N* ~ C^a) of the C4 loss. The paper prints neither."""
        g, sweep = self.sweep(self.scaling), self.scaling
        for metric in paper.FIGURE5:
            parts, why = [], []
            for fam in ("transfusion", "chameleon"):
                f = g[(g["family"] == fam) & (g[metric] > 0)] if not g.empty and metric in g else g.iloc[0:0]
                try:
                    fit = fit_trendline(f["flops"], f[metric], bootstrap_k=self.k) if len(f) else None
                except (FitError, ValueError) as exc:
                    fit, reason = None, str(exc)
                else:
                    reason = f"no {fam} runs of {sweep} with {metric}"
                if fit is None or "intervals" not in fit:
                    why.append(reason)
                    continue
                lo, hi = fit["intervals"]["slope"]
                parts.append(f"{fam[0].upper()} {fit['slope']:.3f} [{lo:.3f}, {hi:.3f}] (r2 {fit['r2']:.2f})")
            basis = f"{sweep}; T Transfusion, C Chameleon" + (f"; not measured: {'; '.join(why)}" if why else "")
            self.rows.append(Finding(f"trendline exponent, {paper.FIGURE5[metric]} (metric ~ C^slope)", "–",
                                     " · ".join(parts) or "–", NO_PAPER_VALUE, basis, sweep))
        g, parts, why = self.sweep(ISOFLOP_SWEEP), [], []
        for fam in ("transfusion", "chameleon"):
            f = g[g["family"] == fam] if not g.empty and ISOFLOP_METRIC in g else g.iloc[0:0]
            try:
                iso = fit_isoflop(f["n_nonembedding"], f[ISOFLOP_METRIC], C=f["flops"], D=f["D"],
                                  bootstrap_k=ISOFLOP_DRAWS, noise_sd=self._sigma["text_c4/ppl"]) if len(f) else None
            except (FitError, ValueError) as exc:
                why.append(f"{fam}: {exc}")
                continue
            if iso is None or "a" not in iso.get("intervals", {}):
                why.append(f"no {fam} runs of {ISOFLOP_SWEEP}")
                continue
            lo, hi = iso["intervals"]["a"]
            parts.append(f"{fam[0].upper()} {iso['a']:.2f} [{lo:.2f}, {hi:.2f}] ({len(iso['budgets'])} budgets: "
                         + ", ".join(f"{b['C']:.2g}" for b in iso["budgets"]) + ")")
        basis = (f"{ISOFLOP_SWEEP}; reference: Hoffmann et al. 2022, a = {HOFFMANN_A}; interval: each run's C4 loss "
                 f"redrawn with the seed noise {self._sigma['text_c4/ppl']:.2g} ({ISOFLOP_DRAWS} draws)") + (
            f"; not measured: {'; '.join(why)}" if why else "")
        self.rows.append(Finding("IsoFLOP exponent a of the C4 loss (N* ~ C^a)", "–", " · ".join(parts) or "–",
                                 NO_PAPER_VALUE, basis, ISOFLOP_SWEEP))


def _setting(d: dict) -> str:
    return ", ".join(f"{k.replace('__', '.')}={v}" for k, v in d.items())


def findings(table: pd.DataFrame, bootstrap_k: int = MIN_RESAMPLES, given_only: bool = False, skipped: tuple = ()) -> pd.DataFrame:
    """The findings table (module docstring): finding, paper, ours [95%], verdict, runs and notes.
    `given_only` keeps the findings whose sweep has runs in `table` (a one-sweep report); the
    table's attrs["left_out"] names the sweeps of the others. `skipped` (analysis.collect's) names
    the runs that did not finish where a finding misses them (a diverged run, say)."""
    j = Judge(table, bootstrap_k, tuple(skipped))
    for step in (j.parity_ratios, j.guidance_parity, j.attention, j.patch_size, j.encoder_size, j.noise_limit,
                 j.text_only, j.exponents):
        step()
    given = set(table["sweep"]) if not table.empty else set()
    rows = [r for r in j.rows if r.sweep in given or not given_only]
    order = ["finding", "paper", "estimator", "ours", "verdict", "paper_inside", "extrapolated", "basis"]
    out = pd.DataFrame([{k: getattr(r, k) for k in order} for r in rows], columns=order)
    out = out.rename(columns={"ours": "ours [95%]", "paper_inside": "paper's value", "extrapolated": "extrapolated",
                              "basis": "runs and notes"})
    out.attrs["left_out"] = sorted({r.sweep for r in j.rows} - {r.sweep for r in rows})
    return out


def main(argv: list[str] | None = None) -> int:
    from analysis.collect import collect
    from analysis.tables import to_markdown

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="results dirs (a root, sweep dirs or run dirs)")
    ap.add_argument("--update", type=Path, metavar="FILE",
                    help=f"also replace the table between {MARKERS[0]!r} and {MARKERS[1]!r} in FILE (the README)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    table, skipped = collect(args.results, warn=None)
    md = to_markdown(findings(table, skipped=skipped))
    print(md, end="")
    if args.update:
        text = args.update.read_text()
        if MARKERS[0] not in text or MARKERS[1] not in text:
            print(f"error: {args.update} has no findings markers; add the lines {MARKERS[0]} and {MARKERS[1]}",
                  file=sys.stderr)
            return 2
        head, rest = text.split(MARKERS[0], 1)
        args.update.write_text(head + MARKERS[0] + "\n" + md + rest[rest.index(MARKERS[1]):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
