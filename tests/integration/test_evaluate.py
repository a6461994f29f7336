"""`python -m grid.evaluate RUN_DIR [key=value ...]`: evaluates a trained run into its evals.json,
keeping what the trainer wrote there (and the trainer's file itself, once); a finished run only
from its own final checkpoint unless told otherwise; bad input and unwritable disks are
one-line errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from evals.harness import EvalConfig
from grid.checkpoint import CheckpointManager
from grid.evaluate import apply_overrides, main
from grid.config import load_config
from grid.train import train


def test_evaluates_a_trained_run_and_merges_into_its_evals_json(prepared, tmp_path, capsys):
    root, _ = prepared
    cfg = load_config(None, ["family=chameleon", "size=cpu-0.11M", "D=2000", "seq_len=96", "batch_rows=2",
                             f"data.data_dir={root}", "eval.benchmarks=geneval", "eval.cond_images=7"])
    run_dir = train(cfg, tmp_path / "results", tmp_path / "ckpt")
    before = json.loads((run_dir / "evals.json").read_text())
    capsys.readouterr()
    rc = main([str(run_dir), "benchmarks=text,caption", "text_tokens=128", "caption_images=2", "caption_tokens=4",
               "progress=false"])
    assert rc == 0
    after = json.loads((run_dir / "evals.json").read_text())
    kept = {k: v for k, v in before.items() if not k.startswith("meta/")}
    assert {k: after[k] for k in kept} == kept  # the trainer's keys survive (held-out losses, geneval)
    assert any(k.startswith("t2i/geneval") for k in kept)
    assert "caption/cider" in after and after["meta/eval_step"] == before["step"]
    used = json.loads(after["meta/eval_config"])
    assert used["text_context"] == 96 and used["cond_images"] == 7  # the run's seq_len and its own eval settings
    printed = json.loads(capsys.readouterr().out)
    assert printed["text_wiki/ppl"] == after["text_wiki/ppl"]


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "not a run directory"),
    (["{missing}", "t2i_imgs=5"], "unknown eval key 't2i_imgs'"),
    (["{missing}", "t2i_images=many"], "t2i_images: expected int"),
    (["{missing}", "benchmarks=text,bleu"], "unknown benchmark"),
    # an option between RUN_DIR and the overrides, as the usage line writes it, still parses
    (["{missing}", "--device", "cpu", "t2i_imgs=5"], "unknown eval key 't2i_imgs'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    rc = main([a.format(missing=tmp_path / "nope") for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err


def test_overrides_parse_every_field_type():
    cfg = apply_overrides(EvalConfig(), ["cfg_scale=3", "sampler=ddpm", "progress=false", "t2i_images=1000",
                                         "lm_eval_tasks=hellaswag, piqa", "benchmarks=text,lm_eval"])
    assert (cfg.cfg_scale, cfg.sampler, cfg.progress, cfg.t2i_images) == (3.0, "ddpm", False, 1000)
    assert cfg.lm_eval_tasks == ("hellaswag", "piqa") and cfg.benchmarks == ("text", "lm_eval")


EVAL = ["benchmarks=text", "text_tokens=64", "progress=false"]  # seconds, not minutes


@pytest.fixture(scope="module")
def finished(prepared, tmp_path_factory):
    """One tiny finished run with checkpoints at steps 10 and 12 (its final step)."""
    root, _ = prepared
    base = tmp_path_factory.mktemp("finished")
    cfg = load_config(None, ["family=chameleon", "size=cpu-0.11M", "D=2000", "seq_len=96", "batch_rows=2",
                             "checkpoint_every=5", f"data.data_dir={root}", "eval.benchmarks=text",
                             "eval.text_tokens=64"])
    return train(cfg, base / "results", base / "ckpt")


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run and of its checkpoints for one test to damage: (run_dir, checkpoint_dir)."""
    run_dir = tmp_path / "results" / finished.name
    shutil.copytree(finished, run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    ckpt = tmp_path / "ckpt" / Path(status["checkpoint_dir"]).name
    shutil.copytree(status["checkpoint_dir"], ckpt)
    _set_status(run_dir, checkpoint_dir=str(ckpt))
    assert CheckpointManager(ckpt).steps() == [10, 12]
    assert json.loads((run_dir / "evals.json").read_text())["step"] == 12
    return run_dir, ckpt


def _set_status(run_dir, **changes):
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, **changes}))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_a_finished_run_is_scored_from_its_final_checkpoint_or_not_at_all(run, capsys):
    run_dir, ckpt = run
    trainers = (run_dir / "evals.json").read_bytes()
    with open(ckpt / "step_00000012" / "state.pt", "ab") as f:
        f.write(b"bit rot")
    assert main([str(run_dir), *EVAL]) == 2
    err = _one_line_error(capsys)
    assert "final checkpoint" in err and "step 12" in err and "checksum mismatch" in err
    assert "--allow-earlier-checkpoint" in err and str(ckpt / "step_00000012") in err
    assert (run_dir / "evals.json").read_bytes() == trainers  # the finished run's scores are untouched
    # Asked for explicitly: the earlier model is scored, and the result says which and why.
    assert main([str(run_dir), "--allow-earlier-checkpoint", *EVAL]) == 0
    after = json.loads((run_dir / "evals.json").read_text())
    assert after["meta/eval_step"] == 10 and "final checkpoint (step 12) is damaged" in after["meta/eval_note"]
    assert after["meta/eval_note"] in capsys.readouterr().err
    shutil.rmtree(ckpt / "step_00000012")
    assert main([str(run_dir), *EVAL]) == 2
    assert "step 12) is missing" in _one_line_error(capsys)


def test_an_unfinished_run_is_scored_from_its_latest_checkpoint_and_says_so(run, capsys):
    run_dir, ckpt = run
    _set_status(run_dir, state="preempted")
    (ckpt / "step_00000012" / "meta.json").unlink()  # a checkpoint cut short, as a preemption can leave
    assert main([str(run_dir), *EVAL]) == 0
    after = json.loads((run_dir / "evals.json").read_text())
    assert after["meta/eval_step"] == 10 and "is preempted, not done" in after["meta/eval_note"]
    assert "not done" in capsys.readouterr().err


def test_another_runs_checkpoint_directory_is_refused_unless_allowed(run, tmp_path, capsys):
    run_dir, ckpt = run
    other = tmp_path / "elsewhere" / "other-run"
    shutil.copytree(ckpt, other)
    assert main([str(run_dir), "--checkpoint-dir", str(other), *EVAL]) == 2
    err = _one_line_error(capsys)
    assert str(other) in err and "status.json records" in err and "--allow-foreign-checkpoint" in err
    assert main([str(run_dir), "--checkpoint-dir", str(other), "--allow-foreign-checkpoint", *EVAL]) == 0
    assert "another run's checkpoints" in json.loads((run_dir / "evals.json").read_text())["meta/eval_note"]
    # The run's own directory, however spelled, is its own.
    assert main([str(run_dir), "--checkpoint-dir", str(ckpt / ".." / ckpt.name), *EVAL]) == 0
    assert "meta/eval_note" not in json.loads((run_dir / "evals.json").read_text())
    # A directory whose owner binding names another run is refused even where status.json points.
    (ckpt / "owner.json").write_text(json.dumps({"run_id": "someone-else"}))
    capsys.readouterr()
    assert main([str(run_dir), *EVAL]) == 2
    assert "belongs to run 'someone-else'" in _one_line_error(capsys)


def test_re_scores_keep_the_trainers_evals_json_and_the_one_before(run):
    run_dir, _ = run
    trainers = (run_dir / "evals.json").read_bytes()
    assert main([str(run_dir), *EVAL]) == 0
    first = (run_dir / "evals.json").read_bytes()
    assert main([str(run_dir), *EVAL, "text_tokens=32"]) == 0
    assert (run_dir / "evals.train.json").read_bytes() == trainers
    assert (run_dir / "evals.prev.json").read_bytes() == first
    assert json.loads((run_dir / "evals.json").read_text())["text_wiki/tokens"] == 32


@pytest.mark.parametrize("code, message", [pytest.param(errno.EROFS, "Read-only file system", id="read-only"),
                                           pytest.param(errno.ENOSPC, "disk full", id="full")])
def test_an_unwritable_run_directory_fails_before_anything_loads(run, capsys, monkeypatch, code, message):
    run_dir, _ = run

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    def loaded(*args, **kwargs):
        raise AssertionError("a checkpoint was loaded before the run directory was found unwritable")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # as root, a chmod would not stop the write
    monkeypatch.setattr(CheckpointManager, "load", loaded)
    assert main([str(run_dir), *EVAL]) == 2
    err = _one_line_error(capsys)
    assert f"cannot write {run_dir}: {message}" in err


def test_a_full_disk_at_the_final_write_is_one_line(run, capsys, monkeypatch):
    run_dir, _ = run
    trainers = (run_dir / "evals.json").read_bytes()

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("grid.evaluate.write_bytes_atomic", full)
    assert main([str(run_dir), *EVAL]) == 2
    err = _one_line_error(capsys)
    assert f"cannot write {run_dir}" in err and "evals" in err and err.endswith("disk full")
    assert (run_dir / "evals.json").read_bytes() == trainers
