"""One run end to end: run directory contents, exact resume after SIGKILL, failure status."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grid.checkpoint import CheckpointManager
from grid.config import load_config
from grid.train import train

ROOT = Path(__file__).resolve().parents[2]


def _overrides(data_dir, family="transfusion", benchmarks="[text]"):
    return [f"family={family}", "size=cpu-0.11M", "D=4000", "seq_len=96", "batch_rows=2",
            "checkpoint_every=3", f"data.data_dir={data_dir}", f"eval.benchmarks={benchmarks}"]


def _evals(run_dir: Path) -> dict:
    """evals.json without the benchmarks' wall times."""
    evals = json.loads((run_dir / "evals.json").read_text())
    return {k: v for k, v in evals.items() if not k.startswith("meta/seconds")}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", ["transfusion", "chameleon"])
def test_run_writes_its_directory(prepared, tmp_path, family):
    root, _ = prepared
    run_dir = train(load_config(None, _overrides(root, family, "[text,caption,fid,geneval]")),
                    tmp_path / "results", tmp_path / "ckpt")
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "evals.json", "status.json"}
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["run_id"] == run_dir.name
    # which code and machine wrote it (grid/provenance.py): the checkout's HEAD, this host
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert status["code"]["commit"] == (head or None) and len(status["code"]["source_sha256"]) == 64
    assert status["machine"]["host"] == socket.gethostname() and status["machine"]["peak_flops_1thread"] > 1e8
    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
    assert metrics[-1]["elements"] >= 4000 > metrics[-2]["elements"]
    evals = json.loads((run_dir / "evals.json").read_text())
    assert evals["elements"] == metrics[-1]["elements"] and any(k.startswith("text_wiki/") for k in evals)
    # the benchmark harness ran at the end, on the trained model
    assert {"caption/cider", "t2i/fid", "t2i/geneval_overall", "n_nonembedding", "flops_with_patch"} <= set(evals)
    assert evals["meta/fid_network"].startswith("shapes-fid-v1:")


def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(prepared, tmp_path):
    root, _ = prepared
    cfg = load_config(None, _overrides(root))
    reference = train(cfg, tmp_path / "a", tmp_path / "ca")
    cmd = [sys.executable, str(ROOT / "grid" / "train.py"), "--results-dir", str(tmp_path / "b"),
           "--checkpoint-dir", str(tmp_path / "cb"), *_overrides(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics_file = tmp_path / "b" / "adhoc" / reference.name / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill between checkpoints (every 3 steps)
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed = json.loads((metrics_file.parent / "status.json").read_text())
    saved = CheckpointManager(killed["checkpoint_dir"]).steps()
    n_steps = len(_metrics(reference))
    assert saved and 0 < max(saved) < n_steps - 1  # the rerun really resumes mid-run
    resumed = train(cfg, tmp_path / "b", tmp_path / "cb")
    assert _metrics(resumed) == [{**m, "seconds": r["seconds"]} for m, r in zip(_metrics(reference), _metrics(resumed))]
    assert len(_metrics(resumed)) == len(_metrics(reference))
    assert _evals(resumed) == _evals(reference)


def test_non_finite_loss_marks_the_run_failed(prepared, tmp_path):
    root, _ = prepared
    cfg = load_config(None, _overrides(root) + ["optim.lr=1e30", "optim.grad_clip=1e30"])
    with pytest.raises(FloatingPointError):
        train(cfg, tmp_path / "r", tmp_path / "c")
    status = json.loads(next((tmp_path / "r" / "adhoc").iterdir()).joinpath("status.json").read_text())
    assert status["state"] == "failed" and "FloatingPointError" in status["error"]


def test_cli_errors_are_one_line(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for args, message in ((["--results-dir", str(a_file)], "is a file"), (["size=nope"], "size"),
                          (["optim.lrr=1"], "unknown config key"),
                          # an option among the overrides still parses: the error is the override's
                          (["size=cpu-0.027M", "--results-dir", str(tmp_path), "optim.lrr=1"], "unknown config key")):
        out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), *args], capture_output=True, text=True)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_run_directory_is_the_message(prepared, tmp_path):
    """The launcher writes config.yaml once; the worker trains what that file says. Its eval
    settings (not part of the id) come from the file, so the file, not a rebuilt sweep, is
    what the worker read; a hand-edited id field is refused in one line."""
    import yaml

    from grid.identity import bind_data, run_id
    from grid.runs import write_run_config

    root, _ = prepared
    cfg = bind_data(load_config(None, _overrides(root, benchmarks="[text]")))  # as the launcher writes it
    run_dir = tmp_path / "r" / "sweep" / run_id(cfg)
    path = write_run_config(run_dir, cfg)
    text = yaml.safe_load(path.read_text())
    text["eval"]["text_tokens"] = 100  # a benchmark setting: the id stays the same
    path.write_text(yaml.safe_dump(text))
    assert write_run_config(run_dir, cfg).read_text() == yaml.safe_dump(text)  # written once, never again
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(run_dir),
                          "--checkpoint-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    evals = json.loads((run_dir / "evals.json").read_text())
    assert json.loads(evals["meta/eval_config"])["text_tokens"] == 100
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"

    edited = tmp_path / "r" / "sweep" / "x"
    write_run_config(edited, cfg)
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(edited)], capture_output=True, text=True)
    assert out.returncode == 2 and "edited by hand" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    # A config.yaml written without the data's fingerprint, for data other than the one that means.
    unbound = load_config(None, _overrides(root, benchmarks="[text]"))
    path = write_run_config(tmp_path / "r" / "sweep" / run_id(unbound), unbound)
    out = subprocess.run([sys.executable, str(ROOT / "grid" / "train.py"), str(path.parent)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "names no data.fingerprint" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
