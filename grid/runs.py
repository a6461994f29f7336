"""The state of a run directory, the lock that keeps two launches from running one run, and
the resolved config.yaml that tells a worker what to run.

States (status.json "state"): new (no status yet), running, preempted, done, failed. A
"running" run whose lock holder is dead on this host was interrupted: it resumes like a
preempted one. The lock is a file created with O_EXCL (atomic on local and NFS v3+ file
systems) holding the owner's host and pid.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from data.atomic import write_text_atomic
from grid.config import RunConfig, resolved, to_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "results"  # results/<sweep>/<run_id>/
DEFAULT_CHECKPOINTS = REPO_ROOT / "checkpoints"  # never committed


def slurm_job_id() -> str | None:
    """This process's SLURM job as `squeue` names it: ARRAYID_TASK for an array task."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


class RunLocked(RuntimeError):
    """Another live process is running this run."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(run_dir: Path) -> str:
    """new / running / preempted / done / failed; a corrupt status.json is a one-line error
    naming the file (nothing is deleted)."""
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return "new"
    try:
        state = json.loads(path.read_text())["state"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path} is corrupt ({exc.__class__.__name__}): fix or delete it to rerun this run") from None
    return state


class RunLock:
    """`with RunLock(run_dir):` own the run for the duration; raises RunLocked when a live
    process on this host (or any process on another host) holds it. A stale lock left by a
    dead process on this host, or by an earlier incarnation of this requeued SLURM job, is
    taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job_id()}

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = {}
                stale = owner.get("host") == self.me["host"] and not _alive(int(owner.get("pid", -1)))
                # A requeued SLURM job keeps its id and starts only after its last incarnation
                # ended, on whatever node: a lock held by that incarnation is stale too.
                requeued = self.me["slurm_job"] is not None and owner.get("slurm_job") == self.me["slurm_job"]
                if stale or requeued:
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLocked(f"{self.path.parent.name} is being run by {owner or 'another process'}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return self
        raise RunLocked(f"could not take {self.path}")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def write_run_config(run_dir: Path, cfg: RunConfig) -> Path:
    """Write run_dir/config.yaml, the resolved config every worker of the run reads, unless it
    is there already (the id is the content, so an existing file holds this very config; a
    finished run's files are never rewritten). Returns its path."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        write_text_atomic(path, to_yaml(resolved(cfg)))
    return path
