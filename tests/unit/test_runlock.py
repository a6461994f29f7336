"""grid/runs.py's run lock: an empty lock is stale, one contender takes over a stale lock, a
reused pid or a silent host is named with the rm that clears it, and the printed fixes carry
the launch's own options. Real processes where processes are the point."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import grid.runs as runs
from grid.launch import _summary, _wait_for_other_launches
from grid.runs import RunLock, RunLocked, live_state, lock_owner, run_problem
from grid.status import main as status
from grid.sweeps import sweep_specs

ROOT = Path(__file__).resolve().parents[2]
TRIALS, CONTENDERS = 60, 6
# One contender per process, for every trial: wait for the trial's go file, try the lock,
# record the outcome, and hold a won lock until every contender has recorded its own.
CONTENDER = """
import sys, time
from pathlib import Path
from grid.runs import RunLock, RunLocked
base, me, trials, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for t in range(trials):
    d = base / str(t)
    while not (d / "go").exists():
        time.sleep(0.0002)
    lock = RunLock(d)
    try:
        lock.__enter__()
        got = 1
    except RunLocked:
        got = 0
    (d / f"result.{me}.{got}").touch()
    while got and len(list(d.glob("result.*"))) < n:
        time.sleep(0.001)
    if got:
        lock.__exit__()
"""


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def _started(proc: subprocess.Popen, word: str) -> subprocess.Popen:
    """The process, once it runs its own program (until exec, /proc shows its parent's)."""
    deadline = time.time() + 30
    while word not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"):
        assert time.time() < deadline
        time.sleep(0.01)
    return proc


def _running(run_dir: Path, lock: dict | str) -> Path:
    """A run dir whose status says running, with the given lock (a record, or raw text)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "running"}))
    (run_dir / ".lock").write_text(lock if isinstance(lock, str) else json.dumps(lock))
    return run_dir


@pytest.fixture
def sleeper():
    """A live process that is not one of the suite's workers: what a reused pid points at."""
    proc = _started(subprocess.Popen(["sleep", "300"]), "sleep")
    yield proc
    proc.kill()
    proc.wait()


def test_an_empty_lock_is_stale_and_the_run_resumes(tmp_path):
    run_dir = _running(tmp_path / "r", "")  # a disk that filled, or a crash, before the owner's record
    assert lock_owner(run_dir) is None and live_state(run_dir) == "interrupted"
    assert "resumes it" in run_problem(run_dir, "s")
    worker = ("import sys; from grid.runs import RunLock; lock = RunLock(sys.argv[1]); lock.__enter__(); "
              "print(open(lock.path).read()); lock.__exit__()")  # as grid/train.py takes it
    out = subprocess.run([sys.executable, "-c", worker, str(run_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["host"] == socket.gethostname() and not (run_dir / ".lock").exists()


def test_one_contender_of_six_takes_over_a_stale_lock(tmp_path):
    stale = json.dumps({"host": socket.gethostname(), "pid": _dead_pid()})
    for t in range(TRIALS):
        (tmp_path / str(t)).mkdir()
        (tmp_path / str(t) / ".lock").write_text(stale)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path), str(i), str(TRIALS), str(CONTENDERS)],
                              env=env) for i in range(CONTENDERS)]
    try:
        holders = []
        for t in range(TRIALS):
            d = tmp_path / str(t)
            (d / "go").touch()
            deadline = time.time() + 60
            while len(results := list(d.glob("result.*"))) < CONTENDERS:
                assert time.time() < deadline and all(p.poll() in (None, 0) for p in procs), f"trial {t} stalled"
                time.sleep(0.002)
            holders.append(sum(r.name.endswith(".1") for r in results))
        assert all(p.wait(timeout=60) == 0 for p in procs)
    finally:
        for p in procs:
            p.kill()
    assert holders == [1] * TRIALS, f"{sum(h > 1 for h in holders)} of {TRIALS} trials had several holders"


def test_a_reused_pid_gives_the_clearing_command(tmp_path, sleeper, capsys):
    old_format = {"host": socket.gethostname(), "pid": sleeper.pid}  # no start time: judged by what the pid runs
    rid = sweep_specs("demo", [])[0].run_id
    run_dir = _running(tmp_path / "demo" / rid, old_format)
    owner = lock_owner(run_dir)
    clear = f"rm {shlex.quote(str(run_dir / '.lock'))}"
    assert owner["pid"] == sleeper.pid and clear in owner["abandoned"] and "sleep 300" in owner["abandoned"]
    launch = shlex.join(["python", "grid/launch.py", "--sweep", "demo", "--results-dir", str(tmp_path)])
    assert run_problem(run_dir, "demo", launch).endswith(f"{clear}, then {launch}")
    assert status(["--sweep", "demo", "--results-dir", str(tmp_path)]) == 0
    assert f"{clear}, then {launch}" in capsys.readouterr().out
    with pytest.raises(RunLocked, match="rm "):
        RunLock(run_dir).__enter__()
    # The launcher does not wait for it (it would wait for ever): stop is never set here.
    waiter = threading.Thread(target=_wait_for_other_launches, args=(tmp_path / "demo", [rid], []), daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive()
    # A new-format lock records the start time: the pid now names another process, so it is stale.
    run_dir = _running(tmp_path / "n", {**old_format, "start": runs._start_time(sleeper.pid) + 1})
    assert lock_owner(run_dir) is None and live_state(run_dir) == "interrupted"
    with RunLock(run_dir) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_an_old_lock_held_by_a_live_worker_still_counts(tmp_path):
    worker = _started(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "grid/train.py"]),
                      "grid/train.py")
    try:
        run_dir = _running(tmp_path / "r", {"host": socket.gethostname(), "pid": worker.pid})
        owner = lock_owner(run_dir)
        assert owner["pid"] == worker.pid and "abandoned" not in owner and live_state(run_dir) == "running"
    finally:
        worker.kill()
        worker.wait()


def test_a_lock_from_a_silent_host_is_reported_and_a_requeue_takes_it(tmp_path, monkeypatch):
    record = {"host": "a-restarted-container", "pid": 1, "start": 5, "slurm_job": "77"}
    run_dir = _running(tmp_path / "r", record)
    assert "abandoned" not in lock_owner(run_dir)  # it beat a moment ago: it may be running there
    old = time.time() - runs.SILENT_S - 60
    os.utime(run_dir / ".lock", (old, old))
    owner = lock_owner(run_dir)
    assert "heartbeat" in owner["abandoned"] and f"rm {run_dir / '.lock'}" in owner["abandoned"]
    with pytest.raises(RunLocked, match="a-restarted-container"):
        RunLock(run_dir).__enter__()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # its own earlier incarnation: stale, taken over
    with RunLock(run_dir) as lock:
        assert json.loads(lock.path.read_text())["slurm_job"] == "77"


def test_the_holder_beats_and_releases_only_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path).__enter__()
    os.utime(lock.path, (0, 0))
    time.sleep(0.5)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.__exit__()
    assert not lock.path.exists()
    lock.path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    lock.__exit__()  # a second release leaves another owner's lock alone
    assert lock.path.exists()


def test_the_printed_fix_carries_the_launch_options(tmp_path, capsys):
    sets = ["D=3000", "seed=7"]
    rid = sweep_specs("demo", sets)[0].run_id
    run_dir = tmp_path / "r" / "demo" / rid
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "error": "E"}))
    argv = ["--sweep", "demo", "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"),
            "--set", *sets]
    assert _summary("demo", tmp_path / "r" / "demo", [rid], {}, argv) == 1
    assert f"E: fix the cause, then {shlex.join(['python', 'grid/launch.py', *argv])} --retry-failed" \
        in capsys.readouterr().err
    assert status(argv) == 0
    assert f"then {shlex.join(['python', 'grid/launch.py', *argv])} --retry-failed" in capsys.readouterr().out


def test_status_with_a_file_as_results_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert status(["--sweep", "demo", "--results-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and "--results-dir" in err[0]
