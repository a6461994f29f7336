"""analysis/lr.py recovers a known optimum: losses that are a parabola in log10(lr) around
lr* = 1e-3 * (N / 1e5)^-0.5, written as finished runs, give back lr* per size and the
exponent -0.5."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from analysis.collect import collect
from analysis.lr import analyse, best_lr, main


def _write_run(root, family, size, n, lr, loss):
    d = root / "lr-sweep" / f"{family}-{size}-{lr:g}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"family": family, "size": size, "D": 10 ** 6, "seed": 0,
                                                   "optim": {"lr": lr, "warmup_steps": 10}}))
    (d / "status.json").write_text(json.dumps({"state": "done"}))
    (d / "evals.json").write_text(json.dumps({"elements": 10 ** 6, "n_nonembedding": n, "flops": 6.0 * n * 1e6,
                                              "text_c4/lm": loss, "images_val/diffusion": 2 * loss}))


def test_best_lr_is_the_parabola_vertex_and_edges_are_flagged():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    vals = [(math.log10(x) - math.log10(5e-4)) ** 2 for x in lrs]
    lr, edge = best_lr(lrs, vals)
    assert lr == pytest.approx(5e-4, rel=1e-6) and not edge
    assert best_lr(lrs, sorted(vals)) == (1e-4, True)


def test_recovers_the_optimum_per_size_and_its_power_law(tmp_path):
    for size, n in (("cpu-a", 1e5), ("cpu-b", 4e5)):
        star = 1e-3 * (n / 1e5) ** -0.5
        for lr in (1e-4, 3e-4, 1e-3, 3e-3):
            _write_run(tmp_path, "transfusion", size, n, lr, 3.0 + (math.log10(lr) - math.log10(star)) ** 2)
    table, skipped = collect([tmp_path])
    assert not skipped and len(table) == 8
    res = analyse(table)["transfusion"]
    assert res["sizes"]["cpu-a"]["text_c4/lm"]["best_lr"] == pytest.approx(1e-3, rel=1e-6)
    assert res["sizes"]["cpu-b"]["text_c4/lm"]["best_lr"] == pytest.approx(5e-4, rel=1e-6)
    fit = res["fits"]["text_c4/lm"]
    assert fit["b"] == pytest.approx(-0.5, abs=1e-6) and fit["a"] * 1e5 ** -0.5 == pytest.approx(1e-3, rel=1e-6)
    assert main([str(tmp_path)]) == 0


def test_an_optimum_at_the_grid_edge_is_not_fitted(tmp_path):
    for size, n in (("cpu-a", 1e5), ("cpu-b", 4e5)):
        for lr in (1e-4, 3e-4, 1e-3):
            _write_run(tmp_path, "transfusion", size, n, lr, 3.0 - math.log10(lr))  # still falling at 1e-3
    table, _ = collect([tmp_path])
    fit = analyse(table)["transfusion"]["fits"]["text_c4/lm"]
    assert "none" in fit and "cpu-a, cpu-b" in fit["none"]


def test_no_runs_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "lr-sweep" in err and "\n" not in err
