"""Runs as SLURM jobs through submitit: resources, job arrays, and preemption that requeues.

    opts = SlurmOptions(partition="gpu", account="proj", time_min=240)   # or from --slurm-config
    jobs = submit(sweep, specs, results_dir, checkpoint_dir, opts)   # run dirs written by the launcher

Decisions:
- Resources: each run's per-size default (grid/estimates.resources_for) overlaid with whatever
  the user set (flags or a YAML file of SlurmOptions fields). Runs with the same resources go
  out as one job array (`executor.batch()`), so a 50-run paper sweep is a handful of arrays.
- One task per GPU (tasks_per_node = gpus_per_node), each task a rank of torch.distributed
  (grid/distributed.py reads the ranks from the job); CPU runs are one task.
- Preemption and time limits: submitit asks SLURM to send SIGUSR2 shortly before the limit
  (submitit's preemption sends SIGTERM, then USR2). The trainer treats USR2 like its own
  signals: it finishes the step, checkpoints, and returns "preempted". `TrainJob` then raises
  USR2 again with submitit's handler back in place, which calls `checkpoint()` (resubmit this
  same job) and requeues. Checkpointing in submitit's handler itself would be wrong: it runs
  between two bytecodes of the training step (see grid/checkpoint.PreemptionFlag).
- Job ids go to results/<sweep>/.slurm/jobs.json (run id -> job id) for grid/status.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import submitit

from data.atomic import write_text_atomic
from grid.estimates import Resources
from grid.merge import read_yaml
from grid.sweeps import RunSpec

SLURM_DIR = ".slurm"
SIGTERM_GRACE_S = 60  # after a SIGTERM, how long a job waits for SLURM's next move (KillWait: 30 s)


@dataclass
class SlurmOptions:
    """Overrides of the per-size defaults; None / "" keeps the run's default."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    time_min: int | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    tasks_per_node: int | None = None  # None: one per GPU (one for CPU runs); > 1 on CPU = gloo ranks
    array_parallelism: int = 256  # at most this many tasks of one array run at once
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: time to checkpoint

    @staticmethod
    def load(path: str | Path | None, overrides: dict) -> "SlurmOptions":
        """Fields from a YAML file, then from flags (unknown keys are a one-line error)."""
        values = read_yaml(path) if path else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(SlurmOptions)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SLURM option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return SlurmOptions(**values)

    def apply(self, res: Resources) -> Resources:
        set_here = {k: v for k, v in asdict(self).items()
                    if k in {f.name for f in fields(Resources)} and v not in (None, "")}
        return replace(res, **set_here)


def executor_parameters(res: Resources, opts: SlurmOptions) -> dict:
    """submitit AutoExecutor parameters for one resource shape."""
    tasks = opts.tasks_per_node or max(1, res.gpus_per_node)
    params = {"timeout_min": res.time_min, "nodes": res.nodes, "tasks_per_node": tasks,
              "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
              "slurm_array_parallelism": opts.array_parallelism, "slurm_signal_delay_s": opts.signal_delay_s}
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(res, key):
            params[f"slurm_{key}"] = getattr(res, key)
    return params


class TrainJob(submitit.helpers.Checkpointable):
    """One run, as a picklable callable (what a SLURM job executes): its run directory, whose
    config.yaml the launcher wrote, and the checkpoint root."""

    def __init__(self, run_dir: str, checkpoint_dir: str) -> None:
        self.run_dir, self.checkpoint_dir = run_dir, checkpoint_dir

    def __call__(self) -> str:
        from grid.train import run_from_dir

        import torch

        # SLURM gives the task cpus_per_task cores; torch would otherwise start one thread per
        # core of the whole node and oversubscribe it.
        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", os.cpu_count() or 1)))
        run_dir = run_from_dir(Path(self.run_dir), Path(self.checkpoint_dir))
        status = json.loads((run_dir / "status.json").read_text())
        if status["state"] == "preempted":
            # The trainer has checkpointed and submitit's own handler is back.
            if "SIGUSR2" in status.get("signals", []):
                signal.raise_signal(signal.SIGUSR2)  # submitit requeues this job and exits
            # SIGTERM alone: a cancel (SIGKILL follows) or a preemption, where SLURM requeues
            # the job itself or submitit's USR2 follows. Wait for either.
            deadline = time.time() + SIGTERM_GRACE_S
            while time.time() < deadline:
                time.sleep(1)
        return status["state"]

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Requeue this same job: the run resumes from its latest checkpoint on its own."""
        return submitit.helpers.DelayedSubmission(self)


def _jobs_file(results_dir: Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / SLURM_DIR / "jobs.json"


def recorded_jobs(results_dir: Path, sweep: str) -> dict[str, str]:
    """run id -> SLURM job id of its latest submission ({} when none)."""
    path = _jobs_file(results_dir, sweep)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ValueError(f"{path} is corrupt: delete it (it only maps runs to SLURM job ids)") from None


def submit(sweep: str, specs: list[RunSpec], results_dir: Path, checkpoint_dir: Path,
           opts: SlurmOptions) -> dict[str, submitit.Job]:
    """Submit each run (its run directory written already: grid/runs.write_run_config) as a
    task of the job array for its resource shape; run id -> job."""
    folder = Path(results_dir) / sweep / SLURM_DIR / "%j"
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        res = opts.apply(spec.resources)
        groups.setdefault(tuple(sorted(executor_parameters(res, opts).items())), []).append(spec)
    jobs: dict[str, submitit.Job] = {}
    for params, group in groups.items():
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(name=f"{sweep}", **dict(params))
        with executor.batch():  # one sbatch --array for the group
            pending = [(s.run_id, executor.submit(TrainJob(str((Path(results_dir) / sweep / s.run_id).resolve()),
                                                           str(Path(checkpoint_dir).resolve()))))
                       for s in group]
        jobs.update(dict(pending))
    ids = {**recorded_jobs(results_dir, sweep), **{rid: job.job_id for rid, job in jobs.items()}}
    write_text_atomic(_jobs_file(results_dir, sweep), json.dumps(ids, indent=1, sort_keys=True))
    return jobs


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state per job id (sacct, then squeue), {} where SLURM cannot be asked."""
    import subprocess

    if not job_ids:
        return {}
    states: dict[str, str] = {}
    for cmd in (["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                ["squeue", "-h", "-o", "%i|%T", "-j", ",".join(job_ids)]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in out.stdout.splitlines():
            job, _, state = line.partition("|")
            states.setdefault(job.strip(), state.split()[0] if state else "")
    return states
