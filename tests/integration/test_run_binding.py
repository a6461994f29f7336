"""A checkpoint belongs to exactly one run: its run id, its results directory and its data.
Real launches through grid/launch.py on the tiny prepared data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data.fingerprint import data_fingerprint
from grid.checkpoint import CheckpointManager, ForeignCheckpoints
from grid.config import load_config
from grid.identity import run_id
from grid.train import train

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "ablation-noise-limit"


def _sets(data_dir) -> list[str]:
    return ["size=cpu-0.11M", "D=2000", "seq_len=96", "batch_rows=2", "checkpoint_every=3",
            "model.patch_kind=linear", f"data.data_dir={data_dir}", "eval.benchmarks=[text]"]


def _launch(results: Path, checkpoints: Path, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "grid" / "launch.py"), "--sweep", SWEEP, "--executor", "local",
                           "--max-parallel", "2", "--results-dir", str(results), "--checkpoint-dir", str(checkpoints),
                           "--set", *_sets(data_dir)], capture_output=True, text=True, timeout=600)


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _runs(results: Path) -> list[Path]:
    return sorted(p for p in (results / SWEEP).iterdir() if p.is_dir())


def test_a_fresh_results_dir_beside_shared_checkpoints_trains_from_scratch(prepared, tmp_path):
    root, _ = prepared
    first = _launch(tmp_path / "a", tmp_path / "ckpt", root)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _launch(tmp_path / "b", tmp_path / "ckpt", root)  # the same checkpoint root
    assert second.returncode == 0, second.stderr[-2000:]
    for a, b in zip(_runs(tmp_path / "a"), _runs(tmp_path / "b"), strict=True):
        assert a.name == b.name
        assert _metrics(b) and _metrics(b) == _metrics(a)  # trained, step by step, not "resumed" at the end
        status = json.loads((b / "status.json").read_text())
        assert not any("resumed" in n for n in status["notes"]), status["notes"]
        assert status["checkpoint_dir"] != json.loads((a / "status.json").read_text())["checkpoint_dir"]


def test_other_data_is_another_run_and_a_run_refuses_data_changed_under_it(prepared, tmp_path):
    root, _ = prepared
    other = tmp_path / "other-data"
    shutil.copytree(root, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["steps"]["text"]["stats"]["note"] = "another corpus release"  # what data.prepare would record
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert data_fingerprint(other, "shapes") != data_fingerprint(root, "shapes")

    first = _launch(tmp_path / "r", tmp_path / "c", root)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _launch(tmp_path / "r", tmp_path / "c", other)  # same settings, other data: not "done"
    assert second.returncode == 0, second.stderr[-2000:]
    assert "2 to run, 0 done" in second.stdout, second.stdout
    assert len(_runs(tmp_path / "r")) == 4  # two runs per data set, each with its own id

    # A run configured on one data set, pointed at a changed one: one line, before any training.
    cfg = load_config(None, [*_sets(root), "D=400"])
    run_dir = train(cfg, tmp_path / "x", tmp_path / "cx")
    changed = load_config(run_dir / "config.yaml")
    changed_dir = tmp_path / "y" / "adhoc" / run_dir.name
    changed_dir.mkdir(parents=True)
    (changed_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace(str(root), str(other)))
    proc = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(changed_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is not the data this run was trained on" in proc.stderr and changed.data.fingerprint in proc.stderr


def test_checkpoints_bound_to_another_run_are_refused(tmp_path):
    mgr = CheckpointManager(tmp_path / "c")
    mine = {"run_id": "r1", "run_dir": "/results/s/r1", "data": "0123456789ab"}
    mgr.bind(mine)
    mgr.save(3, {"step": 3})
    mgr.bind(mine)  # its own run: fine, again and again
    for key, value in (("run_dir", "/elsewhere/s/r1"), ("data", "ba9876543210"), ("run_id", "r2")):
        with pytest.raises(ForeignCheckpoints, match=f"belong to {key}"):
            CheckpointManager(tmp_path / "c").bind({**mine, key: value})


def test_checkpoint_every_zero_turns_periodic_checkpoints_off(prepared, tmp_path):
    root, _ = prepared
    cfg = load_config(None, [*_sets(root), "D=600", "checkpoint_every=0"])
    run_dir = train(cfg, tmp_path / "r", tmp_path / "c")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and run_dir.name == run_id(load_config(run_dir / "config.yaml"))
    steps = CheckpointManager(status["checkpoint_dir"]).steps()
    assert steps == [_metrics(run_dir)[-1]["step"]]  # only the final one
