"""`python -m grid.evaluate RUN_DIR [key=value ...]`: evaluates a trained run into its evals.json,
keeping what the trainer wrote there; bad input is a one-line error."""

from __future__ import annotations

import json

import pytest

from evals.harness import EvalConfig
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
