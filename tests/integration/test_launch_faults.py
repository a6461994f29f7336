"""Launcher arguments and environment faults: each one line, with a truthful exit code, and a
finished sweep that nothing can write to is still a no-op."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grid import launch
from grid.config import load_config
from grid.runs import RunLock
from grid.train import train

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "ablation-noise-limit"
LAUNCH = [sys.executable, str(ROOT / "grid" / "launch.py")]


def _sets(data_dir, D=2000) -> list[str]:
    return ["size=cpu-0.11M", f"D={D}", "seq_len=96", "batch_rows=2", "checkpoint_every=3",
            "model.patch_kind=linear", f"data.data_dir={data_dir}", "eval.benchmarks=[text]"]


def _args(tmp_path, data_dir, D=2000) -> list[str]:
    return ["--sweep", SWEEP, "--executor", "local", "--max-parallel", "2", "--results-dir", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "c"), "--set", *_sets(data_dir, D)]


@pytest.mark.parametrize("k", ["0", "-1"])
def test_max_parallel_below_one_is_one_line(tmp_path, k):
    out = subprocess.run(LAUNCH + ["--sweep", SWEEP, "--max-parallel", k, "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--max-parallel must be at least 1" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_symlink_loops_are_one_line(prepared, tmp_path):
    root, _ = prepared
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for flag in ("--results-dir", "--checkpoint-dir"):
        args = _args(tmp_path, root)
        args[args.index(flag) + 1] = str(loop / "x")
        out = subprocess.run(LAUNCH + args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "symbolic links" in out.stderr and str(loop) in out.stderr


def test_a_finished_sweep_that_cannot_be_written_is_a_no_op(prepared, tmp_path, monkeypatch, capsys):
    root, _ = prepared
    assert launch.main(_args(tmp_path, root)) == 0
    run_dirs = sorted(p for p in (tmp_path / "r" / SWEEP).iterdir() if p.is_dir())
    before = {p: p.stat().st_mtime_ns for d in run_dirs for p in d.iterdir()}

    def read_only(*args, **kwargs):  # the fault: every new file on this disk is refused
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]) if args else None)

    monkeypatch.setattr(Path, "touch", read_only)
    monkeypatch.setattr(os, "open", read_only)
    capsys.readouterr()
    assert launch.main(_args(tmp_path, root)) == 0  # nothing to do, nothing written, no error
    assert "0 to run, 2 done" in capsys.readouterr().out
    monkeypatch.undo()
    assert {p: p.stat().st_mtime_ns for d in run_dirs for p in d.iterdir()} == before
    # The trainer, asked to run a finished run, says it is done without taking the lock.
    monkeypatch.setattr(RunLock, "__enter__", read_only)
    cfg = load_config(run_dirs[0] / "config.yaml")
    assert train(cfg, tmp_path / "r", tmp_path / "c", SWEEP) == run_dirs[0]


def test_ctrl_c_to_the_launchers_process_group_checkpoints_and_says_sigint(prepared, tmp_path):
    root, _ = prepared
    cmd = LAUNCH + _args(tmp_path, root, D=100_000)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # both workers past a checkpoint
        metrics = list((tmp_path / "r").rglob("metrics.jsonl"))
        if len(metrics) == 2 and all(len(m.read_text().splitlines()) >= 4 for m in metrics):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "SIGINT: stopping 2 run(s) at their next checkpoint" in err, err
    for log in (tmp_path / "r" / SWEEP).glob(".*.log"):
        assert "KeyboardInterrupt" not in log.read_text()
    for m in metrics:
        status = json.loads((m.parent / "status.json").read_text())
        assert status["state"] == "preempted" and status["signals"][0] == "SIGINT"


def test_paper_sizes_are_not_trained_on_the_toy_world_unless_asked(tmp_path, capsys):
    from grid.launch import main as launch_main

    assert launch_main(["--sweep", "paper", "--results-dir", str(tmp_path / "r"), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "paper-size models (0.16B" in err and "--toy-data" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written
    assert launch_main(["--sweep", "paper", "--dry-run", "--toy-data"]) == 0
    assert "toy world" not in capsys.readouterr().err
    assert launch_main(["--sweep", "demo", "--dry-run"]) == 0  # CPU sizes on the toy world are its purpose
    assert "toy world" not in capsys.readouterr().err
