"""The report shows each metric beside its interval and reference floors, and fits only metrics.

Runs here carry the harness's key scheme (evals/intervals.py): t2i/fid with _lo/_hi,
_floor_real, _ref_random, _ref_black. The tables put those in the metric's cell; fits.json and
parity.csv have no entry for a companion key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from analysis.report import build
from analysis.tables import ablation_table, cell, is_companion, main_metrics, table3

N = {"cpu-0.11M": 106_816, "cpu-0.33M": 332_448, "cpu-0.8M": 803_968}


def _run(sweep: Path, family: str, size: str, D: int, **model) -> None:
    run = sweep / f"{family}-{size}-D{D // 1000}k{''.join(map(str, model.values()))}"
    run.mkdir(parents=True)
    C = 6 * N[size] * D
    fid = 60 * (C / 1e12) ** -0.1 * (0.9 if family == "transfusion" else 1.0)
    floors = {"t2i/fid_floor_real": 2.2, "t2i/fid_ref_random": 57.3 if family == "transfusion" else 34.0,
              "t2i/fid_ref_black": 74.4}
    evals = {"step": 10, "elements": D, "flops": C, "n_nonembedding": N[size], "t2i/fid": fid,
             "t2i/fid_lo": fid - 1.5, "t2i/fid_hi": fid + 1.7, **floors, "text_c4/lm": 5 * (C / 1e12) ** -0.05,
             "meta/t2i_protocol": "2"}
    (run / "config.yaml").write_text(yaml.safe_dump({"family": family, "size": size, "D": D, "seed": 0,
                                                     "model": {"patch_size": 2, **model}, "data": {}}))
    (run / "evals.json").write_text(json.dumps(evals))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "elements": D, "loss": 1.0}) + "\n")
    (run / "status.json").write_text(json.dumps({"state": "done"}))


def test_companions_are_told_apart_from_metrics():
    keys = ["t2i/fid", "t2i/fid_lo", "t2i/fid_hi", "t2i/fid_floor_real", "t2i/kid_ref_black", "caption/objects",
            "caption/objects_ref_shuffled", "cond/caption_nll_shuffled", "text_wiki/ppl_ref_unigram"]
    assert main_metrics(keys) == ["t2i/fid", "caption/objects", "cond/caption_nll_shuffled"]
    assert is_companion("t2i/geneval_overall_ref_true") and not is_companion("t2i/geneval_color_attr")
    row = {"t2i/fid": 23.4, "t2i/fid_lo": 22.1, "t2i/fid_hi": 24.9, "t2i/fid_floor_real": 1.2,
           "t2i/fid_ref_black": 70.0, "t2i/fid_ref_random": math.nan}
    assert cell(row, "t2i/fid") == "23.4 [22.1, 24.9] (floor_real 1.2 · ref_black 70)"
    assert cell(row, "t2i/fid", interval=False) == "23.4 (floor_real 1.2 · ref_black 70)"
    assert cell({"t2i/fid": 5.0}, "t2i/fid") == "5"


def test_report_tables_show_floors_beside_fid_and_fit_no_companion(tmp_path):
    root = tmp_path / "results"
    for fam in ("transfusion", "chameleon"):
        for size in N:
            for D in (200_000, 400_000, 800_000):
                _run(root / "toy", fam, size, D)
    for p in (1, 2):
        _run(root / "ablation-patch", "transfusion", "cpu-0.8M", 400_000, patch_size=p, patch_kind="linear")
    out = tmp_path / "report"
    build([root], out, bootstrap_k=10)
    t3 = (out / "table3_toy.md").read_text()
    assert "(floor_real 2.2 · ref_random 57.3 · ref_black 74.4)" in t3  # transfusion's own autoencoder
    assert "ref_random 34" in t3 and "t2i/fid_lo" not in t3 and "[" in t3
    ablation = (out / "ablation-patch.md").read_text()
    assert "floor_real 2.2" in ablation and "t2i/fid_floor_real" not in ablation
    fits = json.loads((out / "fits.json").read_text())
    fitted = set(fits["toy"]["trendline"])
    assert "t2i/fid" in fitted and not any(is_companion(m) for m in fitted)
    parity = pd.read_csv(out / "parity.csv")
    assert not any(is_companion(m) for m in parity["metric"])
    assert "floor_real is what real images score" in (out / "report.md").read_text()


def test_table_functions_accept_a_table_without_companions():
    table = pd.DataFrame([{"family": "transfusion", "size": "cpu-0.8M", "D": 1e5, "flops": 1e12, "t2i/fid": 30.0,
                           "sweep": "ablation-patch", "model.patch_size": 2}])
    t3 = table3(table, ["t2i/fid"], {})
    assert t3.iloc[0]["t2i/fid ↓"] == "30"
    assert ablation_table(table, "ablation-patch", ["t2i/fid"]).iloc[0]["t2i/fid ↓"] == "30"
