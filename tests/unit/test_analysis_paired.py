"""analysis/paired.py: the matched-setting parity estimator, on simulated families of known
parity laid out as toy-paper's design, with toy-paper's C4 slope and noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.chance import beyond_chance, chance_reference
from analysis.verdicts import sig2
from analysis.paired import PairingError, paired_parity
from analysis.parity import family_parity
from analysis.resample import summarize
from grid.sweeps import get_sweep
from model.accounting import backbone_params
from model.sizes import get_size

METRIC = "text_c4/ppl"
# toy-paper's C4 perplexity (measured on results/toy-paper): the slope of log
# perplexity on log C; each run's seed noise (sd in log) at 5, 16 and 50 elements per parameter,
# from the seed pairs' differences 0.18, 0.03 and ~0.01 over sqrt(2); and the trendline's
# misspecification, the mean residual at each ratio (+0.19, -0.05, -0.15), shared by both
# families, which the paired difference cancels and the pooled trendline does not.
SLOPE = -0.28
NOISE = {5: 0.127, 16: 0.021, 50: 0.01}
MISFIT = {5: 0.19, 16: -0.05, 50: -0.15}
SIMULATIONS = 300
RESAMPLES = 2000  # per simulation: coverage needs no converged endpoints, only unbiased ones


def _design() -> pd.DataFrame:
    rows = []
    for spec in get_sweep("toy-paper"):
        c = spec.cfg
        n = backbone_params(get_size(c.size))
        rows.append({"family": c.family, "size": c.size, "seed": c.seed, "D_budget": float(c.D), "D": float(c.D),
                     "n_nonembedding": float(n), "flops": 6.0 * n * c.D, "ratio": round(c.D / n)})
    return pd.DataFrame(rows)


DESIGN = _design()


def simulate(parity: float, rng: np.random.Generator | None, design: pd.DataFrame = DESIGN) -> pd.DataFrame:
    """Both families on one power law in C, Transfusion shifted so that it needs `parity` times
    Chameleon's compute for the same perplexity; rng None: no noise."""
    x = np.log(design["flops"].to_numpy())
    r = design["ratio"].to_numpy()
    noise = np.zeros(len(x)) if rng is None else rng.standard_normal(len(x)) * np.array([NOISE[v] for v in r])
    y = 3.0 + SLOPE * (x - x.mean()) + np.array([MISFIT[v] for v in r]) + noise
    y -= np.where(design["family"] == "transfusion", SLOPE * math.log(parity), 0.0)
    return design.assign(**{METRIC: np.exp(y)})


def test_the_design_is_toy_papers_with_three_seeds_at_its_largest_setting():
    top = DESIGN[DESIGN["flops"] > 0.9 * DESIGN["flops"].max()]
    assert len(DESIGN) == 34 and sorted(top["seed"]) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("parity", [0.03, 0.5, 1.0, 3.0])
def test_exact_input_gives_the_exact_ratio(parity):
    res = paired_parity(simulate(parity, None), METRIC, max_resamples=RESAMPLES, min_resamples=RESAMPLES)
    assert res["ratio"] == pytest.approx(parity, rel=1e-6)
    assert res["slope_a"] == pytest.approx(SLOPE, rel=1e-6)


def _coverage(parity: float, method: str = "paired") -> tuple[float, float]:
    """(share of intervals holding the truth, share excluding 1) over SIMULATIONS noisy sweeps."""
    rng = np.random.default_rng(round(parity * 1000))
    cover = exclude = 0
    for _ in range(SIMULATIONS):
        t = simulate(parity, rng)
        if method == "paired":
            lo, hi = paired_parity(t, METRIC, min_resamples=RESAMPLES, max_resamples=RESAMPLES)["interval"]
        else:  # the paper's trendline method with the target's seed noise, as findings.py runs it
            lo, hi = family_parity(t, METRIC, RESAMPLES, NOISE[50]).get("interval", (math.nan, math.nan))
        cover += lo <= parity <= hi
        exclude += hi < 1 or lo > 1
    return cover / SIMULATIONS, exclude / SIMULATIONS


# Coverage measured over 1,500 simulations per ratio (these tests run the first 300):
# 1: 94.9%, 0.5: 95.9%, 3: 94.9%, 0.03: 99.0% (standard error ~0.6 points); analysis/paired.py
# says what the other bootstraps gave.
@pytest.mark.parametrize("parity", [0.5, 1.0, 3.0])
def test_the_paired_interval_covers_the_truth_95_percent_of_the_time(parity):
    cover, _ = _coverage(parity)
    assert 0.93 <= cover <= 0.97, cover


def test_far_from_parity_the_paired_interval_is_conservative():
    # At 0.03 the gap is 3.5 in log compute and the slope's bootstrap spread, multiplied by it,
    # is wider than its sampling spread: the interval covers more often than 95%, never less.
    cover, excl = _coverage(0.03)
    assert cover >= 0.95 and excl == 1.0, cover


def test_the_paired_interval_excludes_1_at_the_papers_ratio():
    cover, exclude = _coverage(0.489)
    assert exclude >= 0.90 and 0.93 <= cover <= 0.97, (exclude, cover)


def test_the_trendline_method_misses_the_papers_ratio_more_often_on_the_same_sweeps():
    # Why the paper's method is not primary here: on the same simulated sweeps it reads one
    # 50-per-parameter run against a line through all runs, so its interval is wider and it
    # excludes 1 at the paper's ratio in fewer sweeps than the 90% the paired estimator reaches
    # (measured: 88%, covering the truth in 97%).
    cover, exclude = _coverage(0.489, method="trendline")
    assert exclude < 0.90, (cover, exclude)


def test_converged_endpoints_agree_to_two_figures_across_seeds_and_200_draws_do_not():
    t = simulate(0.5, np.random.default_rng(7))
    converged = {(sig2(r["interval"][0]), sig2(r["interval"][1]))
                 for r in (paired_parity(t, METRIC, seed=s) for s in range(5))}
    assert len(converged) == 1, converged
    few = {(sig2(r["interval"][0]), sig2(r["interval"][1]))
           for r in (paired_parity(t, METRIC, seed=s, min_resamples=200, max_resamples=200) for s in range(5))}
    assert len(few) > 1, few


def test_the_committed_runs_give_converged_endpoints():
    from analysis.collect import collect
    table, _ = collect(["results/toy-paper"], warn=None)
    res = paired_parity(table, METRIC)
    iv = res["log_interval"]
    assert iv.converged and iv.resamples >= 10_000 and iv.rel_error() < 0.01
    assert {(sig2(r["interval"][0]), sig2(r["interval"][1])) for r in
            (paired_parity(table, METRIC, seed=s) for s in range(1, 5))} == {(sig2(res["interval"][0]), sig2(res["interval"][1]))}


def test_an_endpoint_among_unreachable_draws_is_infinite_not_nan():
    iv = summarize(np.r_[np.linspace(-1, 1, 900), np.full(100, np.inf)])
    assert iv.hi == math.inf and iv.lo == pytest.approx(-0.945, abs=0.01) and iv.converged


def test_settings_run_by_one_family_only_are_left_out_and_too_few_refused():
    t = simulate(1.0, np.random.default_rng(0))
    one_sided = t[~((t["family"] == "chameleon") & (t["size"] == "cpu-0.8M"))]
    res = paired_parity(one_sided, METRIC, min_resamples=RESAMPLES, max_resamples=RESAMPLES)
    assert res["n_settings"] == 9 and res["n_pairs"] == 12
    with pytest.raises(PairingError, match="matched setting"):
        paired_parity(t[t["size"] == "cpu-0.8M"].iloc[:2], METRIC)


def test_a_transfusion_that_does_not_improve_never_catches_up():
    t = simulate(1.0, None)
    worse = t[METRIC].where(t["family"] == "chameleon", 100.0 * t["flops"] ** 0.01)  # rises with compute
    res = paired_parity(t.assign(**{METRIC: worse}), METRIC, min_resamples=RESAMPLES, max_resamples=RESAMPLES)
    assert res["ratio"] == math.inf


def test_chance_is_the_best_trivial_reference_and_runs_must_beat_it_beyond_their_interval():
    run = {"family": "transfusion", "size": "s", "seed": 0, "caption/cider": 0.9, "caption/cider_ref_shuffled": 0.85,
           "caption/cider_ref_constant": 0.63, "t2i/fid": 20.0, "t2i/fid_hi": 24.0, "t2i/fid_ref_random": 23.1,
           "t2i/fid_ref_black": 74.0}
    assert chance_reference(run, "caption/cider") == (0.85, "shuffled")
    assert chance_reference(run, "t2i/fid") == (23.1, "random")
    assert beyond_chance(pd.DataFrame([run]), "caption/cider")[0]
    ok, why = beyond_chance(pd.DataFrame([run]), "t2i/fid")  # 20 < 23.1, but its interval reaches 24
    assert not ok and "random 23.1" in why
    # CIDEr records no interval: one seed's noise stands in for it (0.9 / 0.85 is 0.057 in log)
    assert not beyond_chance(pd.DataFrame([run]), "caption/cider", log_sd=0.1)[0]


def test_two_stage_resamples_draw_settings_then_their_seed_replicates():
    from analysis.resample import two_stage_counts
    members = np.array([0, 1, 1, 1, 2])  # setting 1 holds three seed replicates
    counts = two_stage_counts(np.random.default_rng(0), members, 20_000)
    per_setting = np.stack([counts[:, members == c].sum(1) for c in range(3)], 1)
    assert (per_setting[:, 1] % 3 == 0).all()  # a setting is drawn whole: its replicates come in threes
    assert (per_setting / [1, 3, 1]).sum(1) == pytest.approx(3)  # 3 settings drawn each time
    assert per_setting.mean(0) == pytest.approx([1, 3, 1], rel=0.02)
    # within a drawn setting the replicates are redrawn, so they do not always come in equal numbers
    drawn_once = counts[per_setting[:, 1] == 3][:, 1:4]
    assert (drawn_once != 1).any(1).mean() == pytest.approx(1 - 6 / 27, abs=0.02)

