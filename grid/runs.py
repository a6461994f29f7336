"""The state of a run directory, the lock that keeps two launches from running one run, and
the resolved config.yaml that tells a worker what to run.

States (status.json "state"): new (no status yet), running, preempted, done, failed, and
corrupt (a status.json that does not parse: that run is left alone, the rest go on). A
"running" run whose lock holder is dead was interrupted (`live_state` says so): it resumes
like a preempted one.

The lock, run_dir/.lock, holds its owner's host, pid, process start time and SLURM job, and
its mtime is the owner's heartbeat (refreshed every HEARTBEAT_S). It is written whole to a temp
file and published with os.link (atomic, and refused if a lock exists, on local and NFS file
systems), so a live owner's lock is never seen empty. Taking over a stale lock (read, judge,
unlink, link) is serialised by an fcntl lock on run_dir/.lock.guard, so one contender wins.
Stale, and taken over: an empty or unreadable lock; a lock on this host whose pid is dead or
now belongs to a process started at another time; one held by an earlier incarnation of this
requeued SLURM job. Looks abandoned, and is reported with the `rm` that clears it (never
removed automatically): a lock without a start time whose pid is now a program that is not
one of this suite's workers, and a lock on another host whose heartbeat stopped SILENT_S ago.

`run_problem` says, in one line with the command that fixes it, why a run is not a finished
result: the launcher's final summary and grid/status.py print it.

The invariant: no command modifies a finished (done) run's files. The trainer refuses a done
run (grid/train.py), the launcher never starts one, and the only command that rewrites its
evals.json is the explicit re-score `python -m grid.evaluate RUN_DIR`. That scores the run's own
final checkpoint (a damaged or missing one, or another run's checkpoints, only when asked with
--allow-earlier-checkpoint / --allow-foreign-checkpoint, and then meta/eval_note says so),
writes atomically, keeps the file it replaces as evals.prev.json and, the first time, the
trainer's original as evals.train.json, never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import socket
import threading
import time
import uuid
from pathlib import Path

from data.atomic import write_text_atomic
from grid.config import RunConfig, resolved, to_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "results"  # results/<sweep>/<run_id>/
DEFAULT_CHECKPOINTS = REPO_ROOT / "checkpoints"  # never committed
HEARTBEAT_S = 30  # a lock's owner touches it this often
SILENT_S = 600  # a lock on another host untouched this long has lost its owner (or its host)
# The command lines of this suite's workers: a pid in an old lock (no start time) that now runs
# anything else was reused, and the run's process is gone.
WORKER = re.compile(r"grid/(train|launch)\.py|submitit|(^|\s)-m\s*grid\.")


def slurm_job_id() -> str | None:
    """This process's SLURM job as `squeue` names it: ARRAYID_TASK for an array task."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


class RunLocked(RuntimeError):
    """Another process holds the run's lock: a live one, or one that looks gone (the message
    names the rm that clears its lock)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it
    names one process even after the pid is reused. None where there is no /proc."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").strip()
    except OSError:
        return None


def _holder(path: Path, me: dict | None = None) -> dict | None:
    """The lock's record where a live process may hold it, with "abandoned" (why its owner looks
    gone, and the rm that clears it) where that cannot be proven; None for no lock or a stale one.
    `me` (a RunLock's own record) adds the rule for an earlier incarnation of its SLURM job."""
    try:
        age = time.time() - path.stat().st_mtime
        owner = json.loads(path.read_text())
    except (OSError, ValueError):  # none, empty or torn: a live owner's lock is never seen so
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    pid, host = owner["pid"], owner.get("host")
    # A requeued SLURM job keeps its id and starts only after its last incarnation ended, on
    # whatever node: a lock held by that incarnation is stale too.
    if me and me["slurm_job"] and owner.get("slurm_job") == me["slurm_job"] and owner != me:
        return None
    clear = f"rm {shlex.quote(str(path))}"
    if host != socket.gethostname():  # its pid cannot be asked; its heartbeat can
        if age < SILENT_S:
            return owner
        return {**owner, "abandoned": f"is held by pid {pid} on {host}, whose heartbeat (the lock's mtime) is "
                                      f"{age / 60:.0f} min old (a dead node, or a container restarted under a new "
                                      f"name): if no process of this run runs on {host}, {clear}"}
    if not _alive(pid):
        return None
    if owner.get("start") is not None:
        start = _start_time(pid)
        return owner if start is None or start == owner["start"] else None  # else: the pid was reused
    cmd = _cmdline(pid)
    if not cmd or WORKER.search(cmd):  # unknown (no /proc, a zombie, a process mid-exec): held
        return owner
    return {**owner, "abandoned": f"is held by pid {pid}, which is now another program "
                                  f"({cmd[:60]}): the run's process is gone, {clear}"}


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
    """Who holds the run's lock, if a live process may: its host, pid, start and slurm_job, and,
    where the owner looks gone but cannot be proven so, "abandoned": why, and the rm that clears
    the lock. None when no lock is held or the lock is stale (the next launch takes it over)."""
    return _holder(Path(run_dir) / ".lock")


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


def run_problem(run_dir: Path, sweep: str, launch: str | None = None) -> str | None:
    """Why this run is not a finished result, and the command that fixes it; None when it is.
    `launch` is the launch command to print, with the options that name this run (--results-dir,
    --checkpoint-dir, --set ...); by default the sweep's plain launch."""
    run_dir = Path(run_dir)
    launch = launch or f"python grid/launch.py --sweep {shlex.quote(sweep)}"
    state = live_state(run_dir)
    owner = lock_owner(run_dir) if state != "done" else None
    if owner and "abandoned" in owner:
        return f"its lock {owner['abandoned']}, then {launch}"
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
        retry = "" if " --retry-failed" in launch else " --retry-failed"
        return f"{error}: fix the cause, then {launch}{retry}"
    if state == "running":
        owner = owner or {}
        return f"being run by pid {owner.get('pid')} on {owner.get('host')}: python grid/status.py --sweep {sweep}"
    return {"new": f"not started: {launch}", "preempted": f"stopped at a checkpoint: {launch} resumes it",
            "interrupted": f"its process died: {launch} resumes it from its last checkpoint"}.get(state, state)


@contextlib.contextmanager
def _guarded(lock: Path):
    """Hold the exclusive fcntl lock on the run's .lock.guard (never deleted, so every contender
    locks one file): who reads, judges, unlinks and replaces .lock, one at a time."""
    fd = os.open(lock.with_name(".lock.guard"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # a file system without POSIX locks: not serialised there
            fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the fcntl lock


class RunLock:
    """`with RunLock(run_dir):` own the run for the duration; raises RunLocked when a live
    process (or one on another host that still beats) holds it, or when its lock looks
    abandoned (the message says which rm clears it). A stale lock (empty, a dead or reused pid on
    this host, an earlier incarnation of this requeued SLURM job) is taken over. While held, a
    daemon thread touches the lock every HEARTBEAT_S."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
                   "slurm_job": slurm_job_id()}
        self._stop: threading.Event | None = None

    def __enter__(self) -> "RunLock":
        tmp = self.path.with_name(f".lock.{uuid.uuid4().hex}")
        try:
            with open(tmp, "w") as f:  # whole and on disk before anyone can see it as .lock
                json.dump(self.me, f)
                f.flush()
                os.fsync(f.fileno())
            with _guarded(self.path):
                for _ in range(2):
                    try:
                        os.link(tmp, self.path)
                        break
                    except FileExistsError:
                        if os.stat(tmp).st_nlink > 1:  # NFS: a retried link that had succeeded
                            break
                        owner = _holder(self.path, self.me)
                        if owner:
                            raise RunLocked(f"{self.path.parent.name}" + (
                                f"'s lock {owner['abandoned']}, then relaunch" if "abandoned" in owner else
                                f" is being run by pid {owner['pid']} on {owner.get('host')}")) from None
                        self.path.unlink(missing_ok=True)
                else:
                    raise RunLocked(f"could not take {self.path}")
        finally:
            tmp.unlink(missing_ok=True)
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), daemon=True).start()
        return self

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def __exit__(self, *exc) -> None:
        """Release the lock if this lock holds it (a second call, or a lock taken over by a
        requeued incarnation of this job, leaves .lock alone)."""
        if self._stop is None:
            return
        self._stop.set()
        self._stop = None
        # A lock that cannot be read or removed (its run dir deleted) is stale once this process ends.
        with contextlib.suppress(OSError, ValueError), _guarded(self.path):
            if json.loads(self.path.read_text()) == self.me:
                self.path.unlink()


def write_run_config(run_dir: Path, cfg: RunConfig) -> Path:
    """Write run_dir/config.yaml, the resolved config every worker of the run reads, unless it
    is there already (the id is the content, so an existing file holds this very config; a
    finished run's files are never rewritten). Returns its path."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        write_text_atomic(path, to_yaml(resolved(cfg)))
    return path
