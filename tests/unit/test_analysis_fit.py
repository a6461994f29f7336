"""analysis/fit.py: each fit form recovers known parameters; published results are reproduced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.fit import fit_chinchilla, fit_isoflop, fit_power, fit_trendline, main, trend_compute, trend_value
from analysis.optim import FitError, grid_losses, objective

DATA = Path(__file__).resolve().parents[1] / "data" / "scaling"
ROOT = Path(__file__).resolve().parents[2]
TRUE = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022


def _chinchilla_points(n: int = 150, noise: float = 0.005, seed: int = 0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    L = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    return N, D, L * np.exp(rng.normal(0, noise, n))


def test_objective_gradient_and_grid_agree():
    N, D, L = _chinchilla_points(30)
    X, ly = np.log(np.column_stack([N, D])), np.log(L)
    theta = np.array([0.4, 6.0, 6.2, 0.3, 0.25])
    f, g = objective(theta, X, ly, 1e-3)
    assert grid_losses(theta[None], X, ly, 1e-3)[0] == pytest.approx(f, rel=1e-10)
    eps = 1e-6
    num = [(objective(theta + eps * e, X, ly, 1e-3)[0] - objective(theta - eps * e, X, ly, 1e-3)[0]) / (2 * eps)
           for e in np.eye(5)]
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-8)


def test_trendline_recovers_line_and_inverts():
    rng = np.random.default_rng(1)
    C = np.geomspace(1e12, 1e18, 30)
    y = np.exp(2.0 - 0.05 * np.log(C) + rng.normal(0, 0.005, 30))
    fit = fit_trendline(C, y, bootstrap_k=100)
    assert fit["slope"] == pytest.approx(-0.05, abs=0.002)
    assert fit["intercept"] == pytest.approx(2.0, abs=0.06)
    lo, hi = fit["intervals"]["slope"]
    assert lo <= fit["slope"] <= hi and lo < -0.05 < hi
    assert trend_compute(fit, trend_value(fit, 3e15)) == pytest.approx(3e15, rel=1e-9)


def test_power_law_recovers_parameters():
    rng = np.random.default_rng(2)
    C = np.geomspace(1e15, 1e22, 40)
    y = (1.8 + 2e3 * C ** -0.2) * np.exp(rng.normal(0, 0.003, 40))
    fit = fit_power(C, y, bootstrap_k=20)
    assert fit["E"] == pytest.approx(1.8, abs=0.1)
    assert fit["alpha"] == pytest.approx(0.2, abs=0.02)
    assert np.log(fit["A"]) == pytest.approx(np.log(2e3), abs=0.5)
    assert fit["bootstrap"]["succeeded"] >= 18


def test_chinchilla_recovers_parameters_with_bootstrap():
    N, D, L = _chinchilla_points()
    fit = fit_chinchilla(N, D, L, bootstrap_k=30)
    assert fit["E"] == pytest.approx(TRUE["E"], abs=0.1)
    assert fit["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
    assert fit["a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.03)
    for p in ("E", "alpha", "beta"):
        lo, hi = fit["intervals"][p]
        assert lo <= fit[p] <= hi


def test_chinchilla_needs_enough_points():
    N, D, L = _chinchilla_points(5)
    with pytest.raises(FitError, match="at least 8 points"):
        fit_chinchilla(N, D, L)


def test_isoflop_recovers_optimal_n_exponent():
    """Budgets sampled on L(N, D) of known alpha, beta: N*(C) ~ C^(beta/(alpha+beta))."""
    rng = np.random.default_rng(3)
    Ns, Ls, Cs = [], [], []
    for C in np.geomspace(1e18, 1e22, 6):
        N = np.geomspace(1e7, 1e11, 25)
        D = C / (6 * N)
        L = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
        Ns.append(N), Ls.append(L * np.exp(rng.normal(0, 0.001, len(N)))), Cs.append(np.full(len(N), C))
    fit = fit_isoflop(np.concatenate(Ns), np.concatenate(Ls), C=np.concatenate(Cs), bootstrap_k=10)
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit["a"] == pytest.approx(a_true, abs=0.03)
    assert fit["a"] + fit["b"] == pytest.approx(1.0, abs=1e-6)  # D* = C / (6 N*)
    assert len(fit["budgets"]) == 6


def test_isoflop_reproduces_porian_exponents():
    """Porian et al. 2024: every configuration with >= 5 budgets, N* exponent within 0.03."""
    points = pd.read_csv(DATA / "porian2024" / "porian_isoflop_points.csv")
    ref = pd.DataFrame(json.loads((DATA / "porian2024" / "porian_fit_results.json").read_text()))
    cfg = ["source", "dataset", "hparams", "warmup", "decay", "param_count", "val"]
    ref = ref[ref.fit == "basic"].set_index(cfg)
    checked = 0
    for key, g in points.groupby(cfg):
        if g.flops.nunique() < 5:
            continue
        fit = fit_isoflop(g.n, g.loss, C=g.flops, D=g.t)
        assert abs(fit["a"] - ref.loc[key, "n_exponent"]) < 0.03, key
        checked += 1
    assert checked == 15


def test_chinchilla_on_muennighoff_single_epoch_is_sensible():
    runs = pd.read_csv(DATA / "muennighoff2023" / "datablations_c4_runs.csv")
    u = runs[runs.epochs == 1]
    fit = fit_chinchilla(u.N, u.D, u.loss)
    assert 1.5 < fit["E"] < 2.3  # C4 irreducible loss; Muennighoff et al. report 1.87
    assert 0.25 < fit["alpha"] < 0.5 and 0.25 < fit["beta"] < 0.5
    assert 0.4 < fit["a"] < 0.65  # N* ~ C^a, near Chinchilla's 0.5


def _csv(tmp_path: Path) -> Path:
    N, D, L = _chinchilla_points(40)
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": N, "D": D, "loss": L, "fam": np.where(np.arange(40) % 2, "x", "y")}).to_csv(path, index=False)
    return path


def test_cli_json_groups(tmp_path, capsys):
    path = _csv(tmp_path)
    assert main(["--csv", str(path), "--form", "trendline", "--n-col", "N", "--d-col", "D", "--y-col", "loss",
                 "--group-col", "fam", "--bootstrap", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["groups"]) == {"x", "y"} and "intervals" in out["groups"]["x"]
    assert main(["--csv", str(path), "--form", "chinchilla", "--n-col", "N", "--d-col", "D", "--y-col", "loss", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"]["all"]["alpha"] > 0


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    path = _csv(tmp_path)
    cmd = [sys.executable, "analysis/fit.py", "--csv", str(path), "--form", "chinchilla", "--n-col", "params",
           "--d-col", "D", "--y-col", "loss"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "'params'" in r.stderr and "available: N, D, loss, fam" in r.stderr and "Traceback" not in r.stderr
    pd.read_csv(path).head(3).to_csv(path, index=False)
    r = subprocess.run(cmd[:7] + ["N"] + cmd[8:], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "at least 8 points" in r.stderr
