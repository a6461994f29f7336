"""Image generation of finished runs across classifier-free guidance scales, the runs untouched:

    python -m grid.guidance RUN_DIR [RUN_DIR ...] [--scales 1,2,3,5] [--out FILE.json]
        [--allow-earlier-checkpoint] [key=value ...]

Guidance trades diversity for agreement with the prompt, so FID has a minimum in the scale while
prompt-following (the GenEval analogue) keeps rising past it, and where the minimum lies moves
with the model. The paper fixes one scale for every model (5 in the family comparison, 3 in the
ablations; evals/config.py's default is 5), which is what the sweeps' evals.json hold. This
shows what that choice costs each run: for every run and scale, the "fid" and "geneval"
benchmarks (evals/harness.py) with their intervals and references, every other setting the
run's own (its config.yaml's eval; key=value overrides as grid.evaluate takes them, e.g.
t2i_images=200). Each run's model is loaded as grid.evaluate loads it (grid/trained.py: a finished
run's own final checkpoint, or an error unless --allow-earlier-checkpoint), and each row names
the step it came from. It writes nothing into the run directories; one JSON object goes to stdout
(and --out) with the code version and machine that wrote it, a line per run and scale to
stderr as each finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from evals.config import EvalConfig
from grid.evaluate import apply_overrides, run_eval_config

BENCHMARKS = ("fid", "geneval")


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--scales {text!r}: expected comma-separated numbers, e.g. 1,2,3,5") from None
    if not scales or min(scales) < 0:
        raise ValueError(f"--scales {text!r}: expected numbers >= 0 (1: no guidance), e.g. 1,2,3,5")
    return scales


def scan(run_dir: str | Path, scales: list[float], overrides: list[str] = (), checkpoint_dir=None,
         device: str = "cpu", log=None, allow_earlier: bool = False) -> list[dict]:
    """One row per scale for one run: its t2i/* metrics at that guidance scale, and the step of
    the checkpoint scored (with a "note" where it is not the finished run's final one)."""
    from evals.harness import evaluate
    from grid.trained import load_trained  # the one entry point that reads a run directory

    trained = load_trained(run_dir, checkpoint_dir, device, allow_earlier=allow_earlier)
    if trained.note and log is not None:
        log(f"[guidance] {trained.note}")
    base = dataclasses.replace(run_eval_config(trained.cfg, list(overrides)), benchmarks=BENCHMARKS)
    rows = []
    for scale in scales:
        start = time.time()
        res = evaluate(trained.model, trained.family, trained.data, trained.cfg.data.dataset,
                       dataclasses.replace(base, cfg_scale=scale), captions=trained.cfg.data.captions)
        row = {"run": str(run_dir), "family": trained.cfg.family, "size": trained.cfg.size,
               "step": trained.step, "elements": trained.elements, **({"note": trained.note} if trained.note else {}),
               "cfg_scale": scale, "t2i_images": base.t2i_images,
               "sampler": base.sampler, "sampler_steps": base.sampler_steps,
               **{k: v for k, v in res.items() if k.startswith("t2i/")}, "seconds": round(time.time() - start, 1)}
        rows.append(row)
        if log is not None:
            log(f"[guidance] {Path(run_dir).name} cfg {scale:g}: FID {row['t2i/fid']:.2f} "
                f"[{row.get('t2i/fid_lo', float('nan')):.2f}, {row.get('t2i/fid_hi', float('nan')):.2f}], "
                f"GenEval {row['t2i/geneval_overall']:.3f} ({row['seconds']:.0f} s)")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR | KEY=VALUE",
                    help="results/<sweep>/<run_id>, and EvalConfig key=value overrides")
    ap.add_argument("--scales", default="1,2,3,5", help="guidance scales, comma-separated (1: none)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--allow-earlier-checkpoint", action="store_true",
                    help="a run whose final checkpoint is damaged or gone: scan the newest earlier one")
    args = ap.parse_intermixed_args(argv)
    overrides = [a for a in args.run_dirs if "=" in a]
    runs = [a for a in args.run_dirs if "=" not in a]
    try:
        scales = parse_scales(args.scales)
        apply_overrides(EvalConfig(), overrides)  # a typo fails before any model loads
        if not runs:
            raise ValueError("no RUN_DIR given: name a finished run, e.g. results/toy-paper/<run_id>")
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        rows = [row for run in runs for row in scan(run, scales, overrides, device=args.device, log=log,
                                                     allow_earlier=args.allow_earlier_checkpoint)]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from grid.provenance import code_version, machine  # what wrote these rows, as status.json records a run's

    text = json.dumps({"scales": scales, "overrides": overrides, "code": code_version(), "machine": machine(args.device),
                       "rows": rows}, indent=1, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
