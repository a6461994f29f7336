"""Evaluate a trained run and merge the results into its evals.json:

    python -m grid.evaluate RUN_DIR [--checkpoint-dir DIR] [--device cpu|cuda|auto]
        [--allow-earlier-checkpoint] [--allow-foreign-checkpoint] [key=value ...]

key=value set EvalConfig fields (evals/harness.py) through the run config's mechanism
(grid/merge.py), e.g. `t2i_images=30000 sampler_steps=250 cfg_scale=3 benchmarks=text,fid
lm_eval_tasks=hellaswag,piqa cond_timesteps=100,500`; tuples are comma-separated. A grid/
command, not an evals/ one, because it reads a run directory and its checkpoints: evals/ knows
metrics, not launchers.
Every setting not given is the run's own (its config.yaml's eval section, as the trainer used it;
text_context is the run's seq_len). The model is loaded by grid/trained.py: a finished run's
exactly from its final checkpoint, and a damaged or missing one is an error unless
--allow-earlier-checkpoint; an unfinished run's from its latest complete one; a checkpoint
directory other than the run's own (status.json, owner.json) is refused unless
--allow-foreign-checkpoint. Whenever the model is not the finished run's final one, the reason
is printed and recorded as meta/eval_note beside meta/eval_step.
Existing keys of evals.json (the trainer's held-out losses, accounting) are kept; benchmark keys
are replaced; a missing or corrupt evals.json is rebuilt whole (held-out losses recomputed). The
only command that rewrites a finished run's evals.json (grid/runs.py): atomically, after copying
the file it replaces to evals.prev.json (so that file is the one before the latest re-score)
and, the first time, the trainer's file to evals.train.json, which is never overwritten. The run
directory must be writable, checked before anything loads; a write error is one line (exit 2).
The training run calls the same `evaluate` at its end.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from data.atomic import write_bytes_atomic
from evals.harness import EvalConfig, evaluate
from grid.merge import apply_dotlist
from grid.runs import read_evals
from grid.trained import EARLIER, FOREIGN, load_trained  # the one entry point that reads a run directory


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


PROBE_BYTES = 1 << 16  # more than the three small JSON files a re-score writes


def cannot_write(path: Path, exc: OSError) -> str:
    return f"cannot write {path}: " + ("disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc))


def check_writable(run_dir: Path) -> None:
    """ValueError (one line) unless PROBE_BYTES can be written in run_dir: a read-only or full
    disk fails in a second, not after the whole evaluation. A missing directory is left to
    load_trained, which says what a run directory is."""
    if not Path(run_dir).is_dir():
        return
    try:
        fd, name = tempfile.mkstemp(prefix=".evaluate-probe-", dir=run_dir)
        try:
            os.write(fd, bytes(PROBE_BYTES))
            os.fsync(fd)  # a full disk may refuse the blocks only here
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise ValueError(cannot_write(Path(run_dir), exc)) from None


def _rescored(data: bytes) -> bool:
    """Whether an evals file is a re-score's output (the trainer's has no meta/eval_step)."""
    try:
        return "meta/eval_step" in json.loads(data)
    except (ValueError, TypeError):
        return False  # a torn file: only the trainer's can be, since a re-score writes atomically


def merge_evals(run_dir: Path, previous: dict, results: dict) -> dict:
    """Write `previous` with `results` over it as evals.json, atomically, after keeping the file
    it replaces (whatever its state) as evals.prev.json and, where there is no evals.train.json
    yet, the trainer's file as that (evals.prev.json holds it for a run re-scored once before
    there was evals.train.json). Returns the merged dict; ValueError (one line) on a write error."""
    run_dir = Path(run_dir)
    path, prev, train = (run_dir / f"evals{s}.json" for s in ("", ".prev", ".train"))
    merged = {**previous, **results}
    writes = []
    if path.exists():
        current = path.read_bytes()
        if not train.exists():
            candidates = [current] + ([prev.read_bytes()] if prev.exists() else [])
            trainers = [b for b in candidates if not _rescored(b)]
            if trainers:
                writes.append((train, trainers[0]))
        writes.append((prev, current))
    writes.append((path, json.dumps(merged, indent=1, sort_keys=True).encode()))
    for target, data in writes:
        try:
            write_bytes_atomic(target, data)
        except OSError as exc:
            raise ValueError(cannot_write(target, exc)) from None
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="results/<sweep>/<run_id>")
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="default: the one status.json records")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    ap.add_argument(EARLIER, action="store_true",
                    help="a finished run whose final checkpoint is damaged or gone: score the newest earlier one")
    ap.add_argument(FOREIGN, action="store_true",
                    help="accept a --checkpoint-dir that is not the run's own (e.g. moved checkpoints)")
    ap.add_argument("overrides", nargs="*", help="EvalConfig key=value, e.g. t2i_images=1000")
    args = ap.parse_intermixed_args(argv)  # options may sit between RUN_DIR and key=value, as the usage line shows
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        # Overrides first: a typo fails before minutes of loading.
        apply_overrides(EvalConfig(), args.overrides)
        check_writable(args.run_dir)
        trained = load_trained(args.run_dir, args.checkpoint_dir, device, allow_earlier=args.allow_earlier_checkpoint,
                               allow_foreign=args.allow_foreign_checkpoint)
        if trained.note:
            print(f"[evaluate] {trained.note}", file=sys.stderr, flush=True)
        previous = previous_evals(args.run_dir)
        if previous is None:
            from grid.train import final_losses

            previous = final_losses(trained.model, trained.family, trained.cfg, trained.data,
                                    torch.device(device), trained.step, trained.elements)
        cfg = run_eval_config(trained.cfg, args.overrides)
        results = evaluate(trained.model, trained.family, trained.data, trained.cfg.data.dataset, cfg,
                           captions=trained.cfg.data.captions)
        results["meta/eval_step"] = trained.step
        previous.pop("meta/eval_note", None)  # an earlier re-score's
        if trained.note:
            results["meta/eval_note"] = trained.note
        merge_evals(args.run_dir, previous, results)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in results.items() if k != "meta/eval_config"}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
