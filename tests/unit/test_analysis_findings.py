"""analysis/findings.py: each verdict follows from the interval, on effects of known sign."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.findings import findings
from analysis.verdicts import Ratio, verdict as _verdict


def _run(sweep: str, fid: float, rel: float = 0.05, **knobs) -> dict:
    """A collected row: FID with a +-rel 95% interval, the other knobs as columns."""
    row = {"sweep": sweep, "family": "transfusion", "size": "cpu-0.11M", "seed": 0, "D": 5e6, "D_budget": 5e6,
           "n_nonembedding": 1e5, "flops": 3e12, "t2i/fid": fid, "t2i/fid_lo": fid * (1 - rel),
           "t2i/fid_hi": fid * (1 + rel)}
    row.update({k.replace("__", "."): v for k, v in knobs.items()})
    return row


def _attention(causal_lin: float, bidir_lin: float, causal_unet: float, bidir_unet: float, rel: float = 0.05) -> pd.DataFrame:
    return pd.DataFrame([
        _run("ablation-attention", causal_lin, rel, model__image_attention="causal", model__patch_kind="linear"),
        _run("ablation-attention", bidir_lin, rel, model__image_attention="bidirectional", model__patch_kind="linear"),
        _run("ablation-attention", causal_unet, rel, model__image_attention="causal", model__patch_kind="unet"),
        _run("ablation-attention", bidir_unet, rel, model__image_attention="bidirectional", model__patch_kind="unet"),
    ])


def _row(table: pd.DataFrame, start: str) -> pd.Series:
    hits = table[table["finding"].str.startswith(start)]
    assert len(hits) == 1, start
    return hits.iloc[0]


def test_verdicts_follow_the_interval():
    assert _verdict(1.2, 1.5, paper_above_one=True) == "reproduced"
    assert _verdict(0.5, 0.9, paper_above_one=True) == "not reproduced"
    assert _verdict(0.5, 0.9, paper_above_one=False) == "reproduced"
    assert _verdict(0.9, 1.1, paper_above_one=True) == "inconclusive"
    r = Ratio(math.log(2.0), 0.1) / Ratio(math.log(2.0), 0.1)
    assert r.log == 0 and r.se == pytest.approx(0.1 * math.sqrt(2))


def test_a_clear_effect_the_paper_reports_is_reproduced():
    f = findings(_attention(60.0, 20.0, 16.8, 16.7), bootstrap_k=0)
    lin = _row(f, "intra-image bidirectional attention helps")
    assert lin["verdict"] == "reproduced" and lin["ours [95%]"].startswith("3 [")
    assert _row(f, "with U-Net patches the attention gap shrinks")["verdict"] == "reproduced"


def test_the_opposite_effect_is_not_reproduced_and_noise_is_inconclusive():
    f = findings(_attention(20.0, 60.0, 16.0, 16.0), bootstrap_k=0)
    assert _row(f, "intra-image bidirectional attention helps")["verdict"] == "not reproduced"
    # the same 5% gap with 30% intervals: the interval holds 1
    f = findings(_attention(21.0, 20.0, 16.0, 16.0, rel=0.3), bootstrap_k=0)
    assert _row(f, "intra-image bidirectional attention helps")["verdict"] == "inconclusive"
    # and with 1% intervals it is a finding
    f = findings(_attention(21.0, 20.0, 16.0, 16.0, rel=0.01), bootstrap_k=0)
    assert _row(f, "intra-image bidirectional attention helps")["verdict"] == "reproduced"


def test_seed_noise_widens_the_interval():
    """Two seeds of a scaling sweep that differ by 30% in FID make a 5% ablation gap inconclusive."""
    t = _attention(21.0, 20.0, 16.0, 16.0, rel=0.01)
    seeds = pd.DataFrame([_run("toy-paper", 10.0, seed=0), _run("toy-paper", 13.0, seed=1)])
    f = findings(pd.concat([t, seeds], ignore_index=True), bootstrap_k=0)
    assert _row(f, "intra-image bidirectional attention helps")["verdict"] == "inconclusive"


def test_missing_runs_are_named_not_guessed():
    f = findings(_attention(60.0, 20.0, 16.8, 16.7), bootstrap_k=0)
    row = _row(f, "larger patches cost image quality")
    assert row["verdict"] == "inconclusive" and "not measured: no runs of ablation-patch" in row["runs and notes"]
    t = _attention(60.0, 20.0, 16.8, 16.7).iloc[:3]  # U-Net bidirectional missing
    row = _row(findings(t, bootstrap_k=0), "with U-Net patches")
    assert row["verdict"] == "inconclusive" and "no finished run with model.image_attention=bidirectional" in row["runs and notes"]


def test_parity_verdict_on_a_sweep_where_transfusion_is_cheaper():
    """Transfusion's metric is Chameleon's at half the compute: parity 0.5, below 1."""
    rows, rng = [], np.random.default_rng(0)
    for fam, shift in (("transfusion", 2.0), ("chameleon", 1.0)):
        for c in np.geomspace(1e11, 1e13, 8):
            ppl = 50 * (c * shift / 1e11) ** -0.2 * math.exp(rng.normal(0, 0.01))
            rows.append({"sweep": "toy-paper", "family": fam, "size": f"s{c:.0e}", "seed": 0, "D": c / 6e5,
                         "D_budget": c / 6e5, "n_nonembedding": 1e5, "flops": c, "text_c4/ppl": ppl})
    f = findings(pd.DataFrame(rows), bootstrap_k=100)
    row = _row(f, "parity FLOP ratio, C4 perplexity")
    ratio = float(row["ours [95%]"].split(" ")[0])
    assert ratio == pytest.approx(0.5, rel=0.1) and row["verdict"] == "reproduced" and row["paper"] == "0.489"
    lo, hi = (float(v) for v in row["ours [95%]"].split("[")[1].rstrip("]").split(", "))
    assert row["estimator"] == "paired (primary)" and row["paper's value"] == ("inside" if lo <= 0.489 <= hi else "excluded")
    assert _row(f, "parity FLOP ratio, image generation FID")["verdict"] == "inconclusive"  # not measured


def _parity_sweep(sweep: str, seed_gap: float) -> list[dict]:
    """Two families on one trendline each, plus a second seed at the smallest compute that moves
    C4 perplexity by seed_gap (log)."""
    rows, rng = [], np.random.default_rng(0)
    for fam, shift in (("transfusion", 2.0), ("chameleon", 1.0)):
        for i, c in enumerate(np.geomspace(1e11, 1e13, 8)):
            ppl = 50 * (c * shift / 1e11) ** -0.2 * math.exp(rng.normal(0, 0.01))
            for seed in (0, 1) if i == 0 else (0,):
                rows.append({"sweep": sweep, "family": fam, "size": f"s{c:.0e}", "seed": seed, "D": c / 6e5,
                             "D_budget": c / 6e5, "n_nonembedding": 1e5, "flops": c,
                             "text_c4/ppl": ppl * math.exp(seed * seed_gap)})
    return rows


def test_parity_uses_the_seed_noise_of_its_own_sweep():
    """A noisier scaling sweep beside toy-paper (the demo, say) leaves toy-paper's parity interval
    as toy-paper's own report gives it; the seed sd the interval used is in the note."""
    name = "parity FLOP ratio by the paper's trendline method, C4"
    alone = _row(findings(pd.DataFrame(_parity_sweep("toy-paper", 0.02)), bootstrap_k=100), name)
    both = pd.DataFrame(_parity_sweep("toy-paper", 0.02) + _parity_sweep("demo", 1.0))
    beside = _row(findings(both, bootstrap_k=100), name)
    assert beside["ours [95%]"] == alone["ours [95%]"] and beside["verdict"] == "reproduced"
    assert "target seed sd 0.014 (log)" in beside["runs and notes"]
    assert beside["estimator"] == "trendline (paper's; secondary)"
    # without replicates of its own, the pool over the scaling sweeps stands in
    no_seeds = [r for r in _parity_sweep("toy-paper", 0.0) if r["seed"] == 0]
    pooled = _row(findings(pd.DataFrame(no_seeds + _parity_sweep("demo", 1.0)), bootstrap_k=100), name)
    assert "target seed sd 0.71 (log)" in pooled["runs and notes"] and pooled["verdict"] == "inconclusive"


def test_without_matched_settings_the_trendline_method_is_primary():
    rows = [dict(r, size=f"{r['family']}-{r['size']}") for r in _parity_sweep("toy-paper", 0.02)]
    f = findings(pd.DataFrame(rows), bootstrap_k=100)
    assert "no setting (size, D, seed) ran in both families" in _row(f, "parity FLOP ratio, C4")["runs and notes"]
    row = _row(f, "parity FLOP ratio by the paper's trendline method, C4")
    assert row["estimator"] == "trendline (paper's; primary: no matched settings)" and row["verdict"] == "reproduced"


def test_given_only_keeps_the_findings_of_the_sweeps_given():
    f = findings(_attention(60.0, 20.0, 16.8, 16.7), bootstrap_k=0, given_only=True)
    assert len(f) == 2 and f["finding"].str.contains("attention").all()
    assert "ablation-patch" in f.attrs["left_out"] and "toy-paper" in f.attrs["left_out"]


def test_a_run_that_did_not_finish_is_named_where_it_is_missing():
    from analysis.collect import Skipped

    t = _attention(60.0, 20.0, 16.8, 16.7).iloc[:3]
    gone = Skipped("ablation-attention/transfusion-x", "/r", "state is 'failed': FloatingPointError: loss is nan")
    row = _row(findings(t, bootstrap_k=0, skipped=[gone]), "with U-Net patches")
    assert "unfinished: transfusion-x: state is 'failed': FloatingPointError: loss is nan" in row["runs and notes"]


def test_fid_parity_at_each_guidance_scale_of_the_sweeps_guidance_json(tmp_path):
    """Where grid.guidance's rows sit beside the parity sweep's runs, each scale gets its own FID
    parity row; at scale 1 here Transfusion needs twice Chameleon's compute: not reproduced."""
    sweep = tmp_path / "toy-paper"
    runs, rows = [], []
    for fam, shift_own, shift_low in (("transfusion", 2.0, 0.5), ("chameleon", 1.0, 1.0)):
        for c in np.geomspace(1e11, 1e13, 8):
            name = f"{fam}-{c:.0e}"
            fid = lambda shift: 100 * (c * shift / 1e11) ** -0.3  # noqa: E731
            runs.append({"sweep": "toy-paper", "family": fam, "size": f"s{c:.0e}", "seed": 0, "D": c / 6e5,
                         "D_budget": c / 6e5, "n_nonembedding": 1e5, "flops": c, "run": name,
                         "path": str(sweep / name), "eval.cfg_scale": 5.0, "t2i/fid": fid(shift_own)})
            rows.append({"run": f"results/toy-paper/{name}", "cfg_scale": 1.0, "t2i/fid": fid(shift_low)})
    table = pd.DataFrame(runs)
    assert not findings(table, bootstrap_k=50)["finding"].str.contains("at guidance").any()  # none measured
    sweep.mkdir()
    (sweep / "guidance.json").write_text(json.dumps({"rows": rows}))
    f = findings(table, bootstrap_k=50)
    assert _row(f, "parity FLOP ratio, image generation FID (below 1")["verdict"] == "reproduced"
    low = _row(f, "parity FLOP ratio, image generation FID, at guidance 1 ")
    assert low["estimator"] == "paired; exploratory"
    assert float(low["ours [95%]"].split(" ")[0]) == pytest.approx(2.0, rel=0.1) and low["verdict"] == "not reproduced"


def test_runs_scored_later_are_read_from_a_guidance_file_of_their_own(tmp_path):
    """Rows of runs that landed after guidance.json was committed sit in guidance-<what>.json:
    both files are read, so the late runs count at each scale and no committed file changes."""
    sweep = tmp_path / "toy-paper"
    sweep.mkdir()
    runs, first, later = [], [], []
    for fam, shift in (("transfusion", 2.0), ("chameleon", 1.0)):
        for i, c in enumerate(np.geomspace(1e11, 1e13, 8)):
            name = f"{fam}-{c:.0e}"
            runs.append({"sweep": "toy-paper", "family": fam, "size": f"s{c:.0e}", "seed": 0, "D": c / 6e5,
                         "D_budget": c / 6e5, "n_nonembedding": 1e5, "flops": c, "run": name,
                         "path": str(sweep / name), "eval.cfg_scale": 5.0, "t2i/fid": 100 * (c / 1e11) ** -0.3})
            (later if i == 7 else first).append({"run": f"results/toy-paper/{name}", "cfg_scale": 1.0,
                                                 "t2i/fid": 100 * (c * shift / 1e11) ** -0.3})
    (sweep / "guidance.json").write_text(json.dumps({"rows": first}))
    table = pd.DataFrame(runs)
    one = _row(findings(table, bootstrap_k=50), "parity FLOP ratio, image generation FID, at guidance 1 ")
    (sweep / "guidance-seed1.json").write_text(json.dumps({"rows": later}))
    both = _row(findings(table, bootstrap_k=50), "parity FLOP ratio, image generation FID, at guidance 1 ")
    assert "7 matched pairs" in one["runs and notes"] and "8 matched pairs" in both["runs and notes"]
    assert "guidance*.json" in both["finding"]
