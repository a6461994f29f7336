"""Issue 15: kill -9 at any point of a run's life, relaunch, and the results are those of an
uninterrupted run. grid/faults.py kills the trainer (SIGKILL, from inside) at a named point:
mid-checkpoint (state.pt written, meta.json not), mid-metrics-line (a torn line), during
evaluation, and between evals.json and the final status.json. A relaunch through the real
launcher must end with the same metrics.jsonl and evals.json, and nothing but the run dir
differs. The fast test covers each point once; the slow ones 24 seeded (point, occurrence) pairs,
and 8 seeded kill -9s of the launcher's whole process group."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grid.faults import ENV_VAR, POINTS

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "ablation-noise-limit"


def _sets(data_dir) -> list[str]:
    return ["size=cpu-0.11M", "D=4000", "seq_len=96", "batch_rows=2", "checkpoint_every=3",
            "model.patch_kind=linear", f"data.data_dir={data_dir}", "eval.benchmarks=[text]"]


def _cmd(out: Path, data_dir) -> list[str]:
    # Two processes of one thread each, every time: a different thread count sums in a
    # different order, and the comparison is exact.
    return [sys.executable, str(ROOT / "grid" / "launch.py"), "--sweep", SWEEP, "--executor", "local",
            "--max-parallel", "2", "--results-dir", str(out / "r"), "--checkpoint-dir", str(out / "c"),
            "--set", *_sets(data_dir)]


def _result(out: Path) -> dict:
    """Per run: metrics without wall times, evals without the benchmarks' wall times, state."""
    runs = {}
    for run_dir in sorted(p for p in (out / "r" / SWEEP).iterdir() if p.is_dir()):
        metrics = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                   for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = {k: v for k, v in json.loads((run_dir / "evals.json").read_text()).items()
                 if not k.startswith("meta/seconds")}
        runs[run_dir.name] = (metrics, evals, json.loads((run_dir / "status.json").read_text())["state"])
    return runs


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    root, _ = prepared
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(_cmd(out, root), check=True, capture_output=True, timeout=600)
    return root, _result(out)


def _killed_then_relaunched(reference, tmp_path, point: str, k: int) -> None:
    root, expected = reference
    killed = subprocess.run(_cmd(tmp_path, root), capture_output=True, text=True, timeout=600,
                            env={**os.environ, ENV_VAR: f"{point}:{k}"})
    assert killed.returncode == 1, killed.stderr[-2000:]  # a run was killed: the launch says it is not done
    status = subprocess.run([sys.executable, str(ROOT / "grid" / "status.py"), "--sweep", SWEEP, "--results-dir",
                             str(tmp_path / "r"), "--set", *_sets(root)], capture_output=True, text=True, timeout=120)
    assert "interrupted" in status.stdout and "resumes it" in status.stdout, status.stdout + status.stderr
    relaunch = subprocess.run(_cmd(tmp_path, root), capture_output=True, text=True, timeout=600)
    assert relaunch.returncode == 0, relaunch.stderr[-2000:]
    assert _result(tmp_path) == expected


@pytest.mark.parametrize("point,k", [("checkpoint", 2), ("metrics", 5), ("evaluation", 1), ("status", 1)])
def test_a_kill_at_each_point_then_a_relaunch_equals_an_uninterrupted_run(reference, tmp_path, point, k):
    _killed_then_relaunched(reference, tmp_path, point, k)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_random_kills_then_a_relaunch_equal_an_uninterrupted_run(reference, tmp_path, seed):
    rng = random.Random(seed)
    point = POINTS[seed % len(POINTS)]  # every point six times
    k = {"checkpoint": rng.randint(1, 3), "metrics": rng.randint(1, 20)}.get(point, 1)
    _killed_then_relaunched(reference, tmp_path, point, k)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_kill_9_to_the_launchers_process_group_then_a_relaunch_equals_an_uninterrupted_run(reference, tmp_path, seed):
    """The launcher and every worker at once, at a seeded moment from start-up to the end of the
    evaluation (as a node loss or `kill -9 -PGID` would)."""
    root, expected = reference
    launch = subprocess.Popen(_cmd(tmp_path, root), start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        launch.wait(timeout=random.Random(seed).uniform(1.0, 40.0))
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.wait(timeout=30)
    relaunch = subprocess.run(_cmd(tmp_path, root), capture_output=True, text=True, timeout=600)
    assert relaunch.returncode == 0, relaunch.stderr[-2000:]
    assert _result(tmp_path) == expected
