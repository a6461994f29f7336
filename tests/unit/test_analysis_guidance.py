"""analysis/guidance.py: parity ratios at each guidance scale from grid.guidance's rows, beside the
evals.json scale, on families of known parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.guidance import at_scale, guidance_table, main


def _fid(c: float, shift: float) -> float:
    return 100 * (c * shift / 1e11) ** -0.3


def _sweep() -> tuple[pd.DataFrame, list[dict]]:
    """At the runs' own scale (5) Transfusion reaches Chameleon's FID with half the compute; at
    scale 1 (grid.guidance's rows) with twice the compute."""
    runs, rows, rng = [], [], np.random.default_rng(0)
    for fam, own, low in (("transfusion", 2.0, 0.5), ("chameleon", 1.0, 1.0)):
        for c in np.geomspace(1e11, 1e13, 6):
            name = f"{fam}-{c:.0e}"
            noise = math.exp(rng.normal(0, 0.01))
            runs.append({"run": name, "eval.cfg_scale": 5.0, "family": fam, "flops": c, "seed": 0,
                         "size": name, "D_budget": c, "t2i/fid": _fid(c, own) * noise, "t2i/geneval_overall": 0.2})
            rows.append({"run": f"results/toy/{name}", "cfg_scale": 1.0, "t2i/fid": _fid(c, low) * noise,
                         "t2i/geneval_overall": 0.1})
    return pd.DataFrame(runs), rows


def _ratio(cell: str) -> float:
    return float(cell.split(" ")[0])


def test_each_scale_has_its_own_parity():
    table, rows = _sweep()
    out = guidance_table(table, rows, k=50)
    assert list(out["guidance"]) == ["5 (evals.json)", "1 (grid.guidance)"]
    assert _ratio(out["fid parity [95%]"][0]) == pytest.approx(0.5, rel=0.1)
    assert _ratio(out["fid parity [95%]"][1]) == pytest.approx(2.0, rel=0.1)
    assert float(out["fid C (largest)"][1]) == pytest.approx(_fid(1e13, 1.0), rel=0.05)
    assert list(out["runs"]) == [12, 12]


def test_runs_without_a_row_at_a_scale_are_dropped():
    table, rows = _sweep()
    t = at_scale(table, rows[1:], 1.0)
    assert len(t) == 11 and rows[0]["run"].split("/")[-1] not in set(t["run"])
    assert t["t2i/geneval_overall"].eq(0.1).all()  # grid.guidance's value, not evals.json's


def test_a_missing_guidance_file_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path), "--guidance", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file: run `python -m grid.guidance" in err and "\n" not in err
    (tmp_path / "g.json").write_text(json.dumps([1, 2]))
    assert main([str(tmp_path), "--guidance", str(tmp_path / "g.json")]) == 2
    assert "not grid.guidance's JSON" in capsys.readouterr().err
