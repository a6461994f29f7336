"""grid/launch.py's progress line: the ETA follows the work done, weighted by each run's cost; and
the local launcher's start order, which the sweep time estimate assumes."""

from __future__ import annotations

import json
import time

import pytest

from grid.estimates import CALIBRATION_PEAK, estimated_seconds, sweep_wall_seconds
from grid.launch import _progress, _work_done, start_order
from grid.sweeps import get_sweep


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


def test_the_longest_run_starts_first_and_the_estimate_knows_it():
    assert start_order(["a", "b", "c", "d"], {"a": (1, 5.0), "b": (1, 60.0), "c": (1, 5.0)}) == ["b", "a", "c", "d"]
    specs = get_sweep("ablation-patch")  # one U-Net run is most of it
    seconds = sorted(estimated_seconds(s.cfg, CALIBRATION_PEAK) for s in specs)
    wall = sweep_wall_seconds(specs, 2, CALIBRATION_PEAK)
    assert wall >= seconds[-1] and wall >= sum(seconds) / 2
    assert wall < sum(seconds) / 2 + seconds[-1] / 2  # the longest did not start last
    assert sweep_wall_seconds(specs, 1, CALIBRATION_PEAK) == pytest.approx(sum(seconds))
