"""analysis/parity.py: a known parity FLOP ratio is recovered from two synthetic families."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.parity import main, parity, ratio_at


def _families(slope: float, offset: float, noise: float = 0.003, seed: int = 0) -> pd.DataFrame:
    """B: log y = 2 + slope log C; A: the same line shifted by `offset` in log y.

    A reaches B's value at C' with slope log C' = slope log C - offset, so the parity ratio
    C'/C is exp(-offset / slope) at every compute.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for fam, off in (("chameleon", 0.0), ("transfusion", offset)):
        for C in np.geomspace(1e12, 1e16, 12):
            y = math.exp(2.0 + off + slope * math.log(C) + rng.normal(0, noise))
            rows.append({"family": fam, "flops": C, "m": y})
    return pd.DataFrame(rows)


def test_lower_is_better_ratio_recovered():
    df = _families(slope=-0.05, offset=-0.05)  # A lower by 5% in log: ratio e^-1
    res = parity(df, "m", bootstrap_k=200)
    assert res["ratio"] == pytest.approx(math.exp(-1), rel=0.15)
    lo, hi = res["interval"]
    assert lo < math.exp(-1) < hi
    assert res["C_b"] == pytest.approx(1e16)
    assert ratio_at(res, 1e14) == pytest.approx(math.exp(-1), rel=0.15)


def test_higher_is_better_ratio_recovered():
    df = _families(slope=0.04, offset=0.08)  # accuracy-like, A higher: ratio e^-2
    res = parity(df, "m", higher_is_better=True, bootstrap_k=50)
    assert res["ratio"] == pytest.approx(math.exp(-2), rel=0.15)
    assert res["interval"][0] < math.exp(-2) < res["interval"][1]


def test_ratio_undefined_when_a_does_not_improve():
    df = _families(slope=-0.05, offset=0.0)
    res = parity(df, "m", higher_is_better=True)  # lower values are worse here: slope goes the wrong way
    assert math.isnan(res["ratio"]) and "does not improve" in res["note"]


def test_cli(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    _families(-0.05, -0.05).to_csv(path, index=False)
    assert main(["--csv", str(path), "--metric", "m", "--family-col", "family", "--a", "transfusion", "--b", "chameleon",
                 "--bootstrap", "20", "--at", "1e14", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratio"] == pytest.approx(math.exp(-1), rel=0.15) and "1e+14" in out["ratio_at"]
    assert main(["--csv", str(path), "--metric", "m", "--family-col", "family", "--a", "transfusion", "--b", "llama"]) == 2
    assert "llama" in capsys.readouterr().err
    assert main(["--csv", str(path), "--metric", "fid", "--family-col", "family", "--a", "x", "--b", "y"]) == 2
    assert "'fid'" in capsys.readouterr().err


def test_a_ratio_outside_the_computes_run_is_flagged_as_extrapolated():
    import pandas as pd

    from analysis.parity import parity

    c = np.array([1e12, 2e12, 4e12, 8e12])
    df = pd.DataFrame({"family": ["a"] * 4 + ["b"] * 4, "flops": np.r_[c, c],
                       "loss": np.r_[5.0 * c ** -0.01, 9.0 * c ** -0.01]})  # b far worse: a matches it early
    res = parity(df, "loss", a="a", b="b")
    assert res["extrapolated"] and res["C_a_needed"] < c.min() and "extrapolated" in res["note"]
    inside = parity(df.assign(loss=np.r_[5.0 * c ** -0.1, 5.0 * (c / 2) ** -0.1]), "loss", a="a", b="b")
    assert "extrapolated" not in inside and inside["ratio"] == pytest.approx(0.5, rel=1e-6)


def test_seed_noise_widens_the_interval_by_what_it_moves_the_target():
    """With seed_sigma the target's seed noise enters: the interval widens; without, it is the
    trendline's scatter alone. analysis/seeds.py recovers a known seed spread."""
    from analysis.seeds import seed_sigma

    df = _families(slope=-0.05, offset=-0.05, noise=0.001)
    base = parity(df, "m", bootstrap_k=300)
    noisy = parity(df, "m", bootstrap_k=300, seed_sigma=0.01)
    width = lambda r: math.log(r["interval"][1] / r["interval"][0])  # noqa: E731
    # a 1% target shift moves log(C) by 0.01 / 0.05 = 0.2: +-1.96 * 0.2 ~ 0.78 in log width
    assert width(base) < 0.3 < 0.6 < width(noisy) < 1.0
    assert noisy["bootstrap"]["seed_sigma"] == 0.01 and noisy["ratio"] == base["ratio"]
    rng = np.random.default_rng(1)
    reps = pd.DataFrame([{"sweep": "s", "family": "a", "size": s, "D_budget": d, "D": d * 1000 + k, "seed": k,
                          "m": math.exp(1 + 0.02 * rng.standard_normal())}
                         for s in ("x", "y") for d in (1, 2) for k in range(10)])
    assert seed_sigma(reps, "m") == pytest.approx(0.02, rel=0.3)
    assert math.isnan(seed_sigma(reps[reps.seed == 0], "m"))  # no replicates, no estimate
