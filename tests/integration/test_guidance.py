"""`python -m grid.guidance RUN_DIR --scales ...`: FID and GenEval of a finished run at each guidance
scale, with the run's own eval settings, and the run's files untouched."""

from __future__ import annotations

import hashlib
import json

import pytest

from grid.config import load_config
from grid.guidance import main
from grid.train import train


def _digest(run_dir) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_each_scale_is_scored_and_the_run_is_untouched(prepared, tmp_path, capsys):
    root, _ = prepared
    cfg = load_config(None, ["family=transfusion", "size=cpu-0.027M", "D=3000", "seq_len=96", "batch_rows=2",
                             f"data.data_dir={root}", "eval.benchmarks=text", "eval.text_tokens=64",
                             "eval.t2i_images=12", "eval.geneval_per_category=2", "eval.bootstrap=20",
                             "eval.sampler_steps=4"])
    run_dir = train(cfg, tmp_path / "results", tmp_path / "ckpt")
    before = _digest(run_dir)
    capsys.readouterr()
    out = tmp_path / "g.json"
    assert main([str(run_dir), "--scales", "1,4", "progress=false", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["code"]["commit"] and printed["machine"]["cores"] >= 1  # provenance, as status.json has it
    rows = printed["rows"]
    assert [r["cfg_scale"] for r in rows] == [1.0, 4.0] and {r["family"] for r in rows} == {"transfusion"}
    for r in rows:
        assert r["t2i/fid_lo"] <= r["t2i/fid"] <= r["t2i/fid_hi"] and "t2i/fid_floor_real" in r
        assert 0 <= r["t2i/geneval_overall"] <= 1
    # the run's own settings: 12 images, 4 DDIM steps (the defaults would be 1,000 and 25)
    assert {(r["t2i_images"], r["sampler"], r["sampler_steps"]) for r in rows} == {(12, "ddim", 4)}
    assert rows[0]["t2i/fid"] != rows[1]["t2i/fid"]  # guidance changed the samples
    assert _digest(run_dir) == before


@pytest.mark.parametrize("args, message", [
    (["{run}", "--scales", "one,two"], "expected comma-separated numbers"),
    (["{run}", "--scales", "-1"], "expected numbers >= 0"),
    (["{run}", "t2i_imgs=5"], "unknown eval key 't2i_imgs'"),
    (["t2i_images=5"], "no RUN_DIR given"),
    (["{run}"], "not a run directory"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    rc = main([a.format(run=tmp_path / "nope") for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err
