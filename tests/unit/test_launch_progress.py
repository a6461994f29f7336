"""grid/launch.py's progress line: the ETA follows the work done, weighted by each run's cost."""

from __future__ import annotations

import json
import time

import pytest

from grid.launch import _progress, _work_done


def _metrics(run_dir, elements: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": 1, "elements": elements // 2}), json.dumps({"step": 2, "elements": elements}),
             '{"step": 3, "elem']  # a torn last line (a run killed mid-write) is not read
    (run_dir / "metrics.jsonl").write_text("\n".join(lines))


def test_work_done_weights_runs_by_their_cost(tmp_path):
    work = {"a": (1000, 10.0), "b": (1000, 30.0), "c": (4000, 60.0)}
    _metrics(tmp_path / "b", 500)
    states = {"a": "done", "b": "running", "c": "pending"}
    assert _work_done(states, work, tmp_path) == pytest.approx((10 + 30 * 0.5) / 100)
    assert _work_done(states, {}, tmp_path) is None


def test_the_eta_comes_from_the_work_done_in_this_launch():
    start = time.time() - 600  # 10 minutes in, 40% done, of which 20% was done before (resumed runs)
    line = _progress({"a": "running", "b": "pending"}, start, 2, share=0.4, share0=0.2)
    assert "(40% of the work)" in line and "ETA 30 min" in line and "10.0 min elapsed" in line
    assert "ETA ?" in _progress({"a": "running"}, start, 1)  # nothing finished, no work measure
