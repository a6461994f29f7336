"""analysis/conditioning.py passes a check only when the interval clears chance: a run that
conditions passes all four, one at chance fails each, and Chameleon has no eps check."""

from __future__ import annotations

import json

import yaml

from analysis.collect import collect
from analysis.conditioning import main, rows_of


def _write(root, name, family, good: bool):
    d = root / "world-calibration" / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"family": family, "size": "cpu-0.33M", "D": 10 ** 6, "seed": 0,
                                                   "data": {"captions": "first", "text_share": 0.5}}))
    (d / "status.json").write_text(json.dumps({"state": "done"}))
    gain = (0.5, 0.4, 0.6) if good else (0.001, -0.01, 0.012)
    ev = {"elements": 10 ** 6, "n_nonembedding": 332_448, "flops": 2e12, "text_c4/ppl": 40.0, "meta/t2i_protocol": "2",
          "cond/caption_image_gain": gain[0], "cond/caption_image_gain_lo": gain[1],
          "cond/caption_image_gain_hi": gain[2],
          "t2i/geneval_overall": 0.6 if good else 0.15, "t2i/geneval_overall_lo": 0.5 if good else 0.1,
          "t2i/geneval_overall_hi": 0.7 if good else 0.2, "t2i/geneval_overall_ref_shuffled": 0.15,
          "caption/correct": 0.7 if good else 0.1, "caption/correct_lo": 0.65 if good else 0.08,
          "caption/correct_hi": 0.75 if good else 0.12, "caption/correct_ref_shuffled": 0.1,
          "caption/distinct": 0.8 if good else 0.01}
    if family == "transfusion":
        ev |= {"cond/eps_text_gain_t500": gain[0] / 10, "cond/eps_text_gain_t500_lo": gain[1] / 10,
               "cond/eps_text_gain_t500_hi": gain[2] / 10}
    (d / "evals.json").write_text(json.dumps(ev))


def test_checks_pass_above_chance_and_fail_at_it(tmp_path, capsys):
    _write(tmp_path, "t-good", "transfusion", True)
    _write(tmp_path, "t-bad", "transfusion", False)
    _write(tmp_path, "c-good", "chameleon", True)
    table, _ = collect([tmp_path])
    rows = {(r["family"], r["checks"]["distinct"]["value"]): r["checks"] for r in rows_of(table)}
    good, bad, cham = rows[("transfusion", 0.8)], rows[("transfusion", 0.01)], rows[("chameleon", 0.8)]
    assert all(c["passed"] for c in good.values()) and len(good) == 5
    assert not any(c["passed"] for c in bad.values())
    assert "eps gain t500" not in cham and all(c["passed"] for c in cham.values())
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "✓" in out and "✗" in out and "n/a" in out


def test_no_runs_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cond" in err and "\n" not in err.strip()
