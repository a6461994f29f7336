"""Issue 15: no finished result is lost, every launch reports the truth, every bad input gets
one line. Real processes throughout: two launchers at once, signals to a live launcher, and
damaged files on disk."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grid.config import load_config
from grid.faults import ENV_VAR
from grid.train import train

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "ablation-noise-limit"  # two runs
LAUNCH = [sys.executable, str(ROOT / "grid" / "launch.py")]
LONG = 100_000  # elements: a run that lasts long enough to be signalled mid-way


def _tiny(data_dir, D=3000) -> list[str]:
    return ["size=cpu-0.11M", f"D={D}", "seq_len=96", "batch_rows=2", "checkpoint_every=3",
            "model.patch_kind=linear", f"data.data_dir={data_dir}", "eval.benchmarks=[text]"]


def _cmd(tmp_path, data_dir, *sets, D=3000, parallel=2) -> list[str]:
    return LAUNCH + ["--sweep", SWEEP, "--executor", "local", "--max-parallel", str(parallel), "--results-dir",
                     str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), "--set", *_tiny(data_dir, D), *sets]


def _launch(tmp_path, data_dir, *sets) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(tmp_path, data_dir, *sets), capture_output=True, text=True, timeout=600)


def _runs(tmp_path) -> list[Path]:
    return sorted(p for p in (tmp_path / "r" / SWEEP).iterdir() if p.is_dir())


def _snapshot(run_dir: Path) -> dict:
    """Every file of a run dir: bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir()) if p.is_file()}


def _state(run_dir: Path) -> str:
    return json.loads((run_dir / "status.json").read_text())["state"]


def test_two_launches_at_once_run_each_run_once(prepared, tmp_path):
    root, _ = prepared
    cmd = _cmd(tmp_path, root, parallel=1)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs  # each reports both runs done, truthfully
    for run_dir in _runs(tmp_path):
        assert _state(run_dir) == "done"
        log = (run_dir.parent / f".{run_dir.name}.log").read_text()
        assert log.count(": training on ") == 1, log  # trained by one launch only
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, len(steps) + 1))


def test_a_done_run_is_never_reentered(prepared, tmp_path):
    root, _ = prepared
    cfg = load_config(None, _tiny(root))
    run_dir = train(cfg, tmp_path / "r", tmp_path / "c")
    before = _snapshot(run_dir)
    for ckpt in (tmp_path / "c").rglob("*"):  # an emptied checkpoint dir: nothing to resume from
        if ckpt.is_file():
            ckpt.unlink()
    assert train(cfg, tmp_path / "r", tmp_path / "c") == run_dir
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(run_dir), "--checkpoint-dir",
                          str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "done already" in out.stderr
    assert _snapshot(run_dir) == before


def test_exit_codes_and_the_summary_say_which_runs_are_not_done(prepared, tmp_path):
    root, _ = prepared
    first = _launch(tmp_path, root, "optim.lr=1e30", "optim.grad_clip=1e30")  # diverges: both fail
    assert first.returncode == 1
    again = _launch(tmp_path, root, "optim.lr=1e30", "optim.grad_clip=1e30")  # a relaunch of failed runs is not a success
    assert again.returncode == 1
    problems = [line for line in again.stderr.splitlines() if " failed: " in line]
    assert len(problems) == 2 and all("FloatingPointError" in p and "--retry-failed" in p for p in problems)
    assert "0/2 runs done, 2 not" in again.stdout


def test_bad_files_and_dirs_are_one_line_errors(prepared, tmp_path):
    root, _ = prepared
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: [gpu\n")
    out = subprocess.run(LAUNCH + ["--sweep", SWEEP, "--executor", "slurm", "--slurm-config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and str(bad) in out.stderr and "line 2" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    for unwritable in ("/proc/no-such-dir/results", str(bad / "results")):  # /proc refuses even root
        out = subprocess.run(LAUNCH + ["--sweep", SWEEP, "--executor", "local", "--results-dir", unwritable,
                                       "--set", *_tiny(root)], capture_output=True, text=True)
        assert out.returncode == 2 and "cannot write the results dir" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    # A run directory whose config.yaml was damaged: one line naming it.
    run_dir = tmp_path / "r" / SWEEP / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("size: [cpu\n")
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(run_dir)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "config.yaml is not valid YAML" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # No prepared data: one line before any run starts (no failed runs to --retry-failed).
    out = subprocess.run(LAUNCH + ["--sweep", SWEEP, "--executor", "local", "--results-dir", str(tmp_path / "r2"),
                                   "--set", *_tiny(tmp_path / "nowhere")], capture_output=True, text=True)
    assert out.returncode == 2 and "data.prepare" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not any(p.is_dir() for p in (tmp_path / "r2" / SWEEP).iterdir())


def test_a_corrupt_evals_json_is_reported_and_rescored(prepared, tmp_path):
    root, _ = prepared
    assert _launch(tmp_path, root).returncode == 0
    run_dir = _runs(tmp_path)[0]
    good = json.loads((run_dir / "evals.json").read_text())
    (run_dir / "evals.json").write_text('{"text_c4/ppl": 1')  # torn
    out = _launch(tmp_path, root)
    assert out.returncode == 1 and "0 to run, 2 done" in out.stdout
    lines = [line for line in out.stderr.splitlines() if run_dir.name in line]
    assert len(lines) == 1 and "evals.json is corrupt" in lines[0] and "python -m grid.evaluate" in lines[0]
    out = subprocess.run([sys.executable, "-m", "grid.evaluate", str(run_dir), "benchmarks=text"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run_dir / "evals.prev.json").read_text() == '{"text_c4/ppl": 1'
    rescored = json.loads((run_dir / "evals.json").read_text())
    same = {k for k in good if not k.startswith("meta/")}
    assert {k: rescored[k] for k in same} == pytest.approx({k: good[k] for k in same})
    assert _launch(tmp_path, root).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_launcher_stops_its_children_and_a_relaunch_resumes(prepared, tmp_path, sig):
    root, _ = prepared
    cmd = _cmd(tmp_path, root, D=LONG)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # both children past a checkpoint
        metrics = list((tmp_path / "r").rglob("metrics.jsonl"))
        if len(metrics) == 2 and all(len(m.read_text().splitlines()) >= 4 for m in metrics):
            break
        time.sleep(0.2)
    pids = [json.loads((m.parent / "status.json").read_text())["pid"] for m in metrics]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and signal.Signals(sig).name in err  # not done: it says so
    for pid in pids:  # no orphan keeps training or holds a lock
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for run_dir in _runs(tmp_path):
        assert _state(run_dir) == "preempted" and not (run_dir / ".lock").exists()
    # The relaunch resumes both and says so in its own output (not only in the hidden logs).
    newest = max((tmp_path / "c").rglob("state.pt"), key=lambda p: p.stat().st_mtime)
    newest.write_bytes(b"damaged")  # one run must fall back to its previous checkpoint
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("resumed from the checkpoint at step") == 2
    assert "skipping checkpoint" in out.stdout and "checksum mismatch" in out.stdout
    assert all(_state(r) == "done" for r in _runs(tmp_path))


def test_a_worker_that_dies_before_its_status_is_named_with_its_last_words(prepared, tmp_path):
    """As once seen under load: the worker died at start ("Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so") before writing status.json, and the launch gave no reason."""
    root, _ = prepared
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if 'grid/train.py' in open('/proc/self/cmdline').read():\n"
        "    print('Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so.', flush=True)\n"
        "    os._exit(1)\n")
    out = subprocess.run(_cmd(tmp_path, root), capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])})
    lines = [line for line in out.stderr.splitlines() if "before recording a state" in line]
    assert out.returncode == 1 and len(lines) == 2, out.stderr
    assert all("exited with 1" in line and "Cannot load libtorch_cpu.so" in line for line in lines)


def test_an_empty_lock_resumes_and_a_reused_pid_is_named_with_the_rm_that_clears_it(prepared, tmp_path):
    """A lock left empty (a full disk) must not keep its run from resuming; an old lock (no start
    time) whose pid now runs another program is named with the rm that clears it, not waited for."""
    root, _ = prepared
    cmd = _cmd(tmp_path, root)
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, ENV_VAR: "checkpoint:2"})  # both runs die mid-way
    assert killed.returncode == 1, killed.stderr[-2000:]
    first, second = _runs(tmp_path)
    (first / ".lock").write_text("")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        (second / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}))
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 1 and _state(first) == "done", out.stderr[-2000:]
    assert out.stdout.count("resumed from the checkpoint at step") == 1
    lines = [line for line in out.stderr.splitlines() if second.name in line]
    assert len(lines) == 1 and f"rm {shlex.quote(str(second / '.lock'))}, then " in lines[0], out.stderr
    assert lines[0].endswith(shlex.join(["python", "grid/launch.py", *cmd[2:]])), lines[0]  # its own options
