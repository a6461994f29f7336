"""The launcher: list, dry run, a real local 2-run sweep (idempotent), status, bad input, locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grid.launch import main as launch
from grid.runs import RunLock, RunLocked
from grid.status import main as status

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "ablation-noise-limit"  # two runs


def _tiny(data_dir) -> list[str]:
    return ["size=cpu-0.11M", "D=3000", "seq_len=96", "batch_rows=2", "model.patch_kind=linear",
            f"data.data_dir={data_dir}", "eval.benchmarks=[text]"]


def test_list_and_dry_run(capsys):
    assert launch(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("demo", "toy-paper", "lr-sweep", "isoflop", "world-calibration"))
    assert launch(["--sweep", "toy-paper", "--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 24 and {"run_id", "family", "size", "seed", "N", "D", "elements_per_param", "flops", "lr",
                                "estimated_s"} <= set(rows[0])
    assert all(r["flops"] == 6 * r["N"] * r["D"] and r["elements_per_param"] == round(r["D"] / r["N"], 2)
               for r in rows)
    assert len({r["run_id"] for r in rows}) == len(rows)
    for size in {r["size"] for r in rows}:  # issue 14: 5 or below to 50 or above at every size
        ratios = [r["elements_per_param"] for r in rows if r["size"] == size]
        assert min(ratios) <= 5 and max(ratios) >= 50
    assert launch(["--sweep", "demo", "--dry-run"]) == 0
    assert "[dry-run] 24 runs; estimated" in capsys.readouterr().out
    # --only: a subset, by id, with the same ids a full launch would use; no match is an error.
    assert launch(["--sweep", "toy-paper", "--dry-run", "--json", "--only", "*-cpu-0.8M-*"]) == 0
    subset = json.loads(capsys.readouterr().out)
    assert subset and {r["size"] for r in subset} == {"cpu-0.8M"}
    assert [r["run_id"] for r in subset] == [r["run_id"] for r in rows if r["size"] == "cpu-0.8M"]
    assert launch(["--sweep", "toy-paper", "--dry-run", "--only", "nothing-*"]) == 2
    assert "matches no run" in capsys.readouterr().err


def test_local_executor_runs_a_sweep_and_a_second_launch_skips_it(prepared, tmp_path, capsys):
    root, _ = prepared
    args = ["--sweep", SWEEP, "--executor", "local", "--max-parallel", "2", "--results-dir", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "c"), "--set", *_tiny(root)]
    assert launch(args) == 0, capsys.readouterr()
    runs = [p for p in (tmp_path / "r" / SWEEP).iterdir() if p.is_dir()]
    assert len(runs) == 2
    assert all(json.loads((p / "status.json").read_text())["state"] == "done" for p in runs)
    capsys.readouterr()
    assert launch(args) == 0
    assert "0 to run, 2 done" in capsys.readouterr().out


def test_bad_input_is_one_line_and_deletes_nothing(prepared, tmp_path):
    root, _ = prepared
    cmd = [sys.executable, str(ROOT / "grid" / "launch.py")]
    out = subprocess.run(cmd + ["--sweep", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "valid" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run(cmd + ["--sweep", "demo", "--set", "size=nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "size" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    out = subprocess.run(cmd + ["--sweep", "demo", "--results-dir", str(a_file)], capture_output=True, text=True)
    assert out.returncode == 2 and a_file.read_text() == "keep"
    # A corrupt status.json: that run is left alone and named in one summary line with its fix;
    # the rest of the sweep runs; the launch exits 1 (a run is not done).
    results = tmp_path / "r"
    rows = json.loads(subprocess.run(cmd + ["--sweep", SWEEP, "--dry-run", "--json", "--set", *_tiny(root)],
                                     capture_output=True, text=True, check=True).stdout)
    run_dir, other = (results / SWEEP / r["run_id"] for r in rows)
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text("{not json")
    out = subprocess.run(cmd + ["--sweep", SWEEP, "--results-dir", str(results), "--checkpoint-dir",
                                str(tmp_path / "c"), "--set", *_tiny(root)], capture_output=True, text=True)
    lines = [line for line in out.stderr.splitlines() if rows[0]["run_id"] in line]
    assert out.returncode == 1 and len(lines) == 1 and "status.json is corrupt" in lines[0] and "delete" in lines[0]
    assert (run_dir / "status.json").read_text() == "{not json"
    assert json.loads((other / "status.json").read_text())["state"] == "done"
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "status.py"), "--sweep", SWEEP, "--results-dir",
                          str(results), "--set", *_tiny(root)], capture_output=True, text=True)
    assert out.returncode == 0 and "corrupt" in out.stdout and "1 done, 1 corrupt" in out.stdout


def test_status_reports_every_run(tmp_path, capsys):
    assert status(["--sweep", "demo", "--results-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 18 and all(r["state"] == "new" for r in rows)


def test_run_lock_excludes_a_second_owner_and_recovers_a_stale_one(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with RunLock(tmp_path):  # its owner is dead: taken over
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_slurm_options_override_the_per_size_defaults(tmp_path):
    from grid.slurm import SlurmOptions, executor_parameters
    from grid.sweeps import get_sweep

    spec = next(s for s in get_sweep("paper") if s.cfg.size == "7B")
    cfg_file = tmp_path / "slurm.yaml"
    cfg_file.write_text("partition: gpu\naccount: proj\ntime_min: 600\n")
    opts = SlurmOptions.load(cfg_file, {"time_min": 120, "qos": None})  # flags win; None = not given
    params = executor_parameters(opts.apply(spec.resources), opts)
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "proj" and params["timeout_min"] == 120
    assert params["gpus_per_node"] == params["tasks_per_node"] == spec.resources.gpus_per_node == 8
    assert params["nodes"] == spec.resources.nodes and "slurm_qos" not in params
    cpu = executor_parameters(get_sweep("demo")[0].resources, SlurmOptions())
    assert cpu["tasks_per_node"] == 1 and "gpus_per_node" not in cpu
    with pytest.raises(ValueError, match="unknown SLURM option.*partion"):
        SlurmOptions.load(None, {"partion": "gpu"})


def test_auto_runs_here_when_the_slurm_client_has_no_controller(tmp_path, monkeypatch, capsys):
    # Fault injection: an sbatch on PATH with a sinfo that cannot reach a controller.
    from grid.launch import _auto_executor

    for name, rc in (("sbatch", 0), ("sinfo", 1)):
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\nexit {rc}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert _auto_executor() == "local"
    assert "no SLURM controller answers" in capsys.readouterr().err
    (tmp_path / "sinfo").write_text("#!/bin/sh\nexit 0\n")
    assert _auto_executor() == "slurm"
