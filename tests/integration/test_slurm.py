"""The SLURM executor against a real SLURM (started by .ci/run with .ci/slurm/start.sh):
a 2-run sweep submitted as one job array, and a preempted job that requeues and ends exactly
like an uninterrupted run. Skipped where `sbatch` is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from grid.checkpoint import CheckpointManager
from grid.launch import main as launch
from grid.runs import write_run_config
from grid.slurm import SlurmOptions, recorded_jobs, submit
from grid.status import main as status
from grid.sweeps import sweep_specs
from grid.train import train



def _slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(
    not _slurm_up(), reason="no running SLURM here (sbatch/sinfo); .ci/slurm/start.sh starts one (root, Debian)")]

SWEEP = "ablation-noise-limit"  # two runs with the same resources


def _tiny(data_dir, D=3000) -> list[str]:
    return ["size=cpu-0.11M", f"D={D}", "seq_len=96", "batch_rows=2", "model.patch_kind=linear",
            "checkpoint_every=1000", f"data.data_dir={data_dir}", "device=cpu",
            "eval.benchmarks=[text]"]


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)


def _evals(run_dir: Path) -> dict:
    evals = json.loads((run_dir / "evals.json").read_text())
    return {k: v for k, v in evals.items() if not k.startswith("meta/seconds")}  # wall times differ


def _lines(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_two_run_sweep_goes_out_as_one_job_array(prepared, tmp_path, capsys):
    root, _ = prepared
    args = ["--sweep", SWEEP, "--executor", "slurm", "--results-dir", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "c"), "--time-min", "10", "--set", *_tiny(root)]
    assert launch(args) == 0, capsys.readouterr()
    jobs = recorded_jobs(tmp_path / "r", SWEEP)
    assert len(jobs) == 2
    arrays = {j.split("_")[0] for j in jobs.values()}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1"]
    for rid, job in jobs.items():
        st = json.loads((tmp_path / "r" / SWEEP / rid / "status.json").read_text())
        assert st["state"] == "done" and st["slurm_job_id"] == job
    capsys.readouterr()

    def states() -> list[tuple[str, str, str]]:
        assert status(["--sweep", SWEEP, "--results-dir", str(tmp_path / "r"), "--set", *_tiny(root), "--json"]) == 0
        return sorted((r["state"], r["slurm_job_id"], r["slurm_state"]) for r in json.loads(capsys.readouterr().out))

    # sacct may still say COMPLETING for a moment after the job's last line
    _wait_for(lambda: [s[2] for s in states()] == ["COMPLETED"] * 2, 60, "sacct to report both jobs COMPLETED")
    assert states() == sorted(("done", job, "COMPLETED") for job in jobs.values())
    assert launch(args) == 0  # idempotent: nothing left to submit
    assert "0 to run, 2 done" in capsys.readouterr().out


def test_a_preempted_job_requeues_and_ends_like_an_uninterrupted_run(prepared, tmp_path):
    root, _ = prepared
    overrides = _tiny(root, D=16_000)
    spec = sweep_specs(SWEEP, overrides)[0]
    # Bitwise equality needs the job's thread count (1 CPU per task): a different number of
    # threads sums in a different order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = train(spec.cfg, tmp_path / "ref", tmp_path / "cref", SWEEP)
    finally:
        torch.set_num_threads(threads)
    write_run_config(tmp_path / "r" / SWEEP / spec.run_id, spec.cfg)  # what the launcher does first
    jobs = submit(SWEEP, [spec], tmp_path / "r", tmp_path / "c", SlurmOptions(time_min=10))
    job = jobs[spec.run_id]
    run_dir = tmp_path / "r" / SWEEP / spec.run_id
    metrics = run_dir / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 10, 120, "the job to train")
    job._interrupt()  # what SLURM does before a preemption: SIGUSR2 to the job
    assert job.result() == "done"  # waits through the requeue
    st = json.loads((run_dir / "status.json").read_text())
    assert st["state"] == "done" and st["slurm_restarts"] >= 1
    # The first incarnation checkpointed at the signal (checkpoint_every is past the end), so
    # the requeued one resumed mid-run rather than starting over.
    steps = CheckpointManager(st["checkpoint_dir"]).steps()
    assert len(steps) == 2 and 10 <= steps[0] < steps[1] == len(_lines(reference))
    assert _lines(run_dir) == _lines(reference)
    assert _evals(run_dir) == _evals(reference)


def test_the_tasks_of_one_job_train_as_one_distributed_run(prepared, tmp_path):
    """Ranks from the SLURM job (submitit's environment), gloo on CPU: equal to one process."""
    root, _ = prepared
    overrides = [*_tiny(root), "batch_rows=4"]
    spec = sweep_specs(SWEEP, overrides)[1]
    reference = train(spec.cfg, tmp_path / "ref", tmp_path / "cref", SWEEP)
    write_run_config(tmp_path / "r" / SWEEP / spec.run_id, spec.cfg)
    job = submit(SWEEP, [spec], tmp_path / "r", tmp_path / "c", SlurmOptions(time_min=10, tasks_per_node=2))[spec.run_id]
    assert job.results() == ["done", "done"]  # one result per task
    run_dir = tmp_path / "r" / SWEEP / spec.run_id
    assert json.loads((run_dir / "status.json").read_text())["world_size"] == 2
    for a, b in zip(_lines(run_dir), _lines(reference), strict=True):
        assert a["elements"] == b["elements"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
