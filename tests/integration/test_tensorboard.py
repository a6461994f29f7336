"""tensorboard=true (grid/tensorboard_curves.py): the event files hold metrics.jsonl's values at
every step, read back with TensorBoard's own reader, one value per step after a kill and a
resume, and nothing is written with the switch off (tests/unit/test_tensorboard_curves.py: the
one-line error for a missing package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grid.checkpoint import CheckpointManager
from grid.config import load_config
from grid.faults import ENV_VAR
from grid.train import train

ROOT = Path(__file__).resolve().parents[2]


def _overrides(data_dir, *extra: str) -> list[str]:
    return ["size=cpu-0.11M", "D=4000", "seq_len=96", "batch_rows=2", "checkpoint_every=3",
            f"data.data_dir={data_dir}", "eval.benchmarks=[text]", *extra]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows them (orphaned events purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_curves_are_the_metrics(run_dir: Path) -> None:
    """Each tag has one point per metrics line that holds it, in step order, equal to float32."""
    expected: dict[str, dict[int, float]] = {}
    for line in _metrics(run_dir):
        for key, value in line.items():
            if key != "step":
                expected.setdefault(key, {})[line["step"]] = value
    curves = _scalars(run_dir)
    assert set(curves) == set(expected)
    for tag, points in curves.items():
        assert [s for s, _ in points] == sorted(expected[tag]), tag  # one value per step, none missing
        assert all(np.float32(v) == np.float32(expected[tag][s]) for s, v in points), tag


def test_curves_equal_metrics_at_every_step(prepared, tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra
    root, _ = prepared
    run_dir = train(load_config(None, _overrides(root, "tensorboard=true", "eval_every=4")),
                    tmp_path / "r", tmp_path / "c")
    assert any("images_val/diffusion" in m for m in _metrics(run_dir))  # held-out lines are curves too
    _assert_curves_are_the_metrics(run_dir)


def test_a_killed_and_resumed_run_has_one_value_per_step(prepared, tmp_path):
    """Killed while writing its second checkpoint (step 6): the event file has steps 1-6 (flushed
    before each checkpoint), the resume starts after step 3 and writes 4-6 again."""
    pytest.importorskip("tensorboard")
    root, _ = prepared
    overrides = _overrides(root, "tensorboard=true")
    cmd = [sys.executable, str(ROOT / "grid" / "train.py"), "--results-dir", str(tmp_path / "r"),
           "--checkpoint-dir", str(tmp_path / "c"), *overrides]
    killed = subprocess.run(cmd, env={**os.environ, ENV_VAR: "checkpoint:2"}, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = next((tmp_path / "r" / "adhoc").iterdir())
    assert CheckpointManager(json.loads((run_dir / "status.json").read_text())["checkpoint_dir"]).steps() == [3]
    assert max(s for s, _ in _scalars(run_dir)["loss"]) == 6  # the steps the resume rewrites are on disk
    train(load_config(None, overrides), tmp_path / "r", tmp_path / "c")
    assert len(list((run_dir / "tensorboard").iterdir())) == 2  # one event file per process
    _assert_curves_are_the_metrics(run_dir)


def test_off_by_default(prepared, tmp_path):
    root, _ = prepared
    run_dir = train(load_config(None, _overrides(root, "D=400")), tmp_path / "r", tmp_path / "c")
    assert (run_dir / "metrics.jsonl").exists() and not (run_dir / "tensorboard").exists()

