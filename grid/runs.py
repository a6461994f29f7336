"""The state of a run directory, the lock that keeps two launches from running one run, and
the resolved config.yaml that tells a worker what to run.

States (status.json "state"): new (no status yet), running, preempted, done, failed, and
corrupt (a status.json that does not parse: that run is left alone, the rest go on). A
"running" run whose lock holder is dead was interrupted (`live_state` says so): it resumes
like a preempted one. The lock is a file created with O_EXCL (atomic on local and NFS v3+ file
systems) holding the owner's host and pid.

`run_problem` says, in one line with the command that fixes it, why a run is not a finished
result: the launcher's final summary and grid/status.py print it.

The invariant: no command modifies a finished (done) run's files. The trainer refuses a done
run (grid/train.py), the launcher never starts one, and the only command that rewrites its
evals.json is the explicit re-score `python -m grid.evaluate RUN_DIR`, atomically, with the
previous file kept beside it as evals.prev.json.
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


def read_status(run_dir: Path) -> dict | None:
    """status.json as a dict; None when there is none; ValueError naming the file when it does
    not parse or has no state."""
    path = Path(run_dir) / "status.json"
    try:
        status = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt ({exc})") from None
    if not isinstance(status, dict) or "state" not in status:
        raise ValueError(f"{path} is corrupt (no state)")
    return status


def run_state(run_dir: Path) -> str:
    """new / running / preempted / done / failed / corrupt (nothing is deleted or rewritten)."""
    try:
        status = read_status(run_dir)
    except ValueError:
        return "corrupt"
    return "new" if status is None else status["state"]


def lock_owner(run_dir: Path) -> dict | None:
    """Who holds the run's lock, if a live process does: its host and pid (a process on another
    host counts as live: it cannot be asked)."""
    try:
        owner = json.loads((Path(run_dir) / ".lock").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict):
        return None
    if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
        return None
    return owner


def live_state(run_dir: Path) -> str:
    """run_state, with a "running" run that no live process holds called "interrupted"."""
    state = run_state(run_dir)
    return "interrupted" if state == "running" and lock_owner(run_dir) is None else state


def last_metrics(run_dir: Path) -> dict | None:
    """The last complete line of the run's metrics.jsonl (a killed run can leave a torn one)."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def read_evals(run_dir: Path) -> dict:
    """evals.json as a dict; ValueError naming the file when it is missing or does not parse."""
    path = Path(run_dir) / "evals.json"
    try:
        evals = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt ({exc})") from None
    if not isinstance(evals, dict):
        raise ValueError(f"{path} is corrupt (not a mapping)")
    return evals


def run_problem(run_dir: Path, sweep: str) -> str | None:
    """Why this run is not a finished result, and the command that fixes it; None when it is."""
    run_dir = Path(run_dir)
    launch = f"python grid/launch.py --sweep {sweep}"
    state = live_state(run_dir)
    if state == "corrupt":
        try:
            read_status(run_dir)
        except ValueError as exc:
            return f"{exc}: fix it, or delete it to rerun the run ({launch})"
    if state == "done":
        try:
            read_evals(run_dir)
        except ValueError as exc:
            return f"{exc}: python -m grid.evaluate {run_dir} re-scores the trained model"
        return None
    if state == "failed":
        error = (read_status(run_dir) or {}).get("error", "no error recorded")
        return f"{error}: fix the cause, then {launch} --retry-failed"
    if state == "running":
        owner = lock_owner(run_dir) or {}
        return f"being run by pid {owner.get('pid')} on {owner.get('host')}: python grid/status.py --sweep {sweep}"
    return {"new": f"not started: {launch}", "preempted": f"stopped at a checkpoint: {launch} resumes it",
            "interrupted": f"its process died: {launch} resumes it from its last checkpoint"}.get(state, state)


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
