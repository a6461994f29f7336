"""Evaluate a trained run and merge the results into its evals.json:

    python -m grid.evaluate RUN_DIR [--checkpoint-dir DIR] [--device cpu|cuda|auto] [key=value ...]

key=value set EvalConfig fields (evals/harness.py) through the run config's mechanism
(grid/merge.py), e.g. `t2i_images=30000 sampler_steps=250 cfg_scale=3 benchmarks=text,fid
lm_eval_tasks=hellaswag,piqa cond_timesteps=100,500`; tuples are comma-separated. A grid/
command, not an evals/ one, because it reads a run directory and its checkpoints: evals/ knows
metrics, not launchers.
Every setting not given is the run's own (its config.yaml's eval section, as the trainer used it;
text_context is the run's seq_len). The run's model is loaded from its latest complete
checkpoint (the directory status.json records, unless --checkpoint-dir is given). Existing keys
of evals.json (the trainer's held-out losses, accounting) are kept; benchmark keys are
replaced; a missing or corrupt evals.json is rebuilt whole (held-out losses recomputed). The
only command that rewrites a finished run's evals.json (grid/runs.py): atomically, with the file
it replaces kept as evals.prev.json. The training run calls the same `evaluate` at its end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from data.atomic import write_bytes_atomic, write_text_atomic
from evals.harness import EvalConfig, evaluate
from grid.merge import apply_dotlist
from grid.runs import read_evals


def apply_overrides(cfg: EvalConfig, overrides: list[str]) -> EvalConfig:
    """cfg with `key=value` strings applied; ConfigError (one line) for a malformed item, an
    unknown key or a bad value."""
    return apply_dotlist(cfg, overrides, what="eval")


def run_eval_config(run_cfg, overrides: list[str]) -> EvalConfig:
    """The eval settings the trainer used for this run (grid/train.py: its config's eval, the
    perplexity window its seq_len), with `key=value` overrides on top."""
    return apply_overrides(dataclasses.replace(run_cfg.eval, text_context=run_cfg.seq_len), overrides)


def previous_evals(run_dir: Path) -> dict | None:
    """The run's evals.json, or None where it is missing or does not parse (then the re-score
    recomputes the trainer's part too). Read before evaluating: a bad file is found in a second,
    not after the whole evaluation."""
    try:
        return read_evals(run_dir)
    except ValueError as exc:
        print(f"[evaluate] {exc}: the held-out losses and accounting are recomputed with the benchmarks",
              file=sys.stderr, flush=True)
        return None


def merge_evals(run_dir: Path, previous: dict, results: dict) -> dict:
    """Write `previous` with `results` over it as evals.json, atomically, after copying the file
    it replaces (whatever its state) to evals.prev.json; returns the merged dict."""
    path = Path(run_dir) / "evals.json"
    if path.exists():
        write_bytes_atomic(path.with_name("evals.prev.json"), path.read_bytes())
    merged = {**previous, **results}
    write_text_atomic(path, json.dumps(merged, indent=1, sort_keys=True))
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="results/<sweep>/<run_id>")
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="default: the one status.json records")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    ap.add_argument("overrides", nargs="*", help="EvalConfig key=value, e.g. t2i_images=1000")
    args = ap.parse_intermixed_args(argv)  # options may sit between RUN_DIR and key=value, as the usage line shows
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        # Overrides first: a typo fails before minutes of loading.
        apply_overrides(EvalConfig(), args.overrides)
        from grid.trained import load_trained  # the one entry point that reads a run directory

        trained = load_trained(args.run_dir, args.checkpoint_dir, device)
        previous = previous_evals(args.run_dir)
        if previous is None:
            from grid.train import final_losses

            previous = final_losses(trained.model, trained.family, trained.cfg, trained.data,
                                    torch.device(device), trained.step, trained.elements)
        cfg = run_eval_config(trained.cfg, args.overrides)
        results = evaluate(trained.model, trained.family, trained.data, trained.cfg.data.dataset, cfg,
                           captions=trained.cfg.data.captions)
        results["meta/eval_step"] = trained.step
        merge_evals(args.run_dir, previous, results)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in results.items() if k != "meta/eval_config"}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
