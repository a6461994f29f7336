"""The launcher's run-time estimates (grid/estimates.py) against what finished runs took.

    python -m bench.estimates results [--unrecorded-peak 8.5e10]

Reads every finished CPU run under the given results dirs whose status.json records its machine
(grid/provenance.py). A run's measurement is its training elements/s (metrics.jsonl's last
`elements` / `seconds`) and its evaluation seconds (status.json's wall time less the training
seconds). A failed run measured its training speed until it failed, so it counts for speed alone
(the one U-Net run at patch 8 failed: its speed is the only one at that patch size). --unrecorded-peak also counts runs written before machines were recorded, as run on a
machine of that one-thread peak (results/README.md names it).

Prints one JSON object per (family, size, patch kind) group: the runs, the measured medians and
`estimate_over_measured`, the median of estimated_seconds / wall seconds of its runs (1 is
right; 0.5 means the launcher promises half the time). A last object holds the medians over all
runs, and what the constants in grid/estimates.py would be from these runs:

- `speed`: median elements/s of linear-patch runs, carried to CALIBRATION_PEAK;
- `peak_exponent`: how speed grows with the peak, ln(speed ratio) / ln(peak ratio), the median
  over groups measured on two machines;
- `unet_s_per_element`: what U-Net patches add per element, by patch size (their runs' 1/speed
  less the linear runs' at the same size and peak). It is measured at each patch size rather
  than modelled: half the elements are text, and the U-Net's work per image changes with the
  patch, so it grows neither with the patch area nor with the images per element (measured:
  0.23 : 1 : 2.8 : 3.8 at patch 1 : 2 : 4 : 8);
- `eval_s`: median evaluation seconds per size with linear patches, `unet_eval_s` what U-Net
  patches add to it, `text_eval_s` a run whose only benchmark is text.

The run times depend on what else the cores did: these runs shared 2 cores with a second run
and with a developer's session.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from grid.config import from_yaml, resolved
from grid.estimates import CALIBRATION_PEAK, PEAK_EXPONENT, estimated_seconds, eval_seconds
from grid.runs import last_metrics, read_status
from model.sizes import CPU_SIZES


def measured_runs(results: list[Path], unrecorded_peak: float | None) -> list[dict]:
    """One record per finished CPU run: its config, peak, elements/s, training and eval seconds."""
    out = []
    for root in results:
        for status_path in sorted(Path(root).glob("*/*/status.json")):
            run_dir = status_path.parent
            status = read_status(run_dir) or {}
            peak = (status.get("machine") or {}).get("peak_flops_1thread") or unrecorded_peak
            last = last_metrics(run_dir)
            done = status.get("state") == "done"
            if not (done or status.get("state") == "failed") or not peak or not last or not last.get("seconds"):
                continue
            cfg = resolved(from_yaml((run_dir / "config.yaml").read_text()))
            if cfg.size not in CPU_SIZES:
                continue
            wall = status["finished"] - status["started"] if done else None
            out.append({"cfg": cfg, "peak": peak, "recorded": bool(status.get("machine")), "done": done,
                        "speed": last["elements"] / last["seconds"], "train_s": last["seconds"],
                        "eval_s": max(0.0, wall - last["seconds"]) if done else None, "wall_s": wall})
    return out


def _median(xs) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def _key(cfg) -> tuple[str, str, str]:
    return cfg.family, cfg.size, cfg.model.patch_kind


def peak_exponent(runs: list[dict]) -> float | None:
    """ln(speed ratio) / ln(peak ratio) over linear groups measured on two peaks; the median."""
    by = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["cfg"].model.patch_kind == "linear":
            by[_key(r["cfg"])][r["peak"]].append(r["speed"])
    ratios = []
    for peaks in by.values():
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            if hi / lo > 1.2:
                ratios.append(math.log(_median(peaks[hi]) / _median(peaks[lo])) / math.log(hi / lo))
    return _median(ratios)


def calibration(runs: list[dict], exponent: float) -> dict:
    """The constants of grid/estimates.py that these runs imply (module docstring)."""
    scale = lambda r: (CALIBRATION_PEAK / r["peak"]) ** exponent  # noqa: E731  a run's speed -> at CALIBRATION_PEAK
    speed, linear, evals, text = defaultdict(list), defaultdict(list), defaultdict(list), []
    for r in runs:
        cfg = r["cfg"]
        if cfg.model.patch_kind == "linear":
            speed[(cfg.family, cfg.size)].append(r["speed"] * scale(r))
            linear[(cfg.family, cfg.size, r["peak"])].append(r["speed"])
            if r["done"]:
                (evals[cfg.size] if set(cfg.eval.benchmarks) - {"text"} else text).append(r["eval_s"] / scale(r))
    unet, unet_eval = defaultdict(list), []
    for r in runs:
        cfg = r["cfg"]
        base = _median(linear.get((cfg.family, cfg.size, r["peak"]), []))
        if cfg.model.patch_kind == "unet" and base:
            unet[cfg.model.patch_size].append((1 / r["speed"] - 1 / base) / scale(r))
            if r["done"] and cfg.size in evals:
                unet_eval.append(r["eval_s"] / scale(r) - _median(evals[cfg.size]))
    return {"speed": {f"{f} {s}": round(_median(v)) for (f, s), v in sorted(speed.items())},
            "unet_s_per_element": {p: float(f"{_median(v):.3g}") for p, v in sorted(unet.items())},
            "eval_s": {s: round(_median(v), 1) for s, v in sorted(evals.items())},
            "unet_eval_s": _median(unet_eval) and round(_median(unet_eval), 1),
            "text_eval_s": _median(text) and round(_median(text), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--unrecorded-peak", type=float, default=None,
                    help="count runs without a recorded machine as run at this one-thread peak (FLOP/s)")
    args = ap.parse_args(argv)
    measured = measured_runs(args.results, args.unrecorded_peak)
    runs = [r for r in measured if r["done"]]
    if not runs:
        print(f"error: no finished CPU run with a recorded machine under {', '.join(map(str, args.results))}: "
              "pass the results dirs that hold them, or --unrecorded-peak for older runs", file=sys.stderr)
        return 2
    groups = defaultdict(list)
    for r in runs:
        r["ratio"] = estimated_seconds(r["cfg"], r["peak"]) / r["wall_s"]
        groups[_key(r["cfg"])].append(r)
    for (family, size, patch), rs in sorted(groups.items()):
        print(json.dumps({"family": family, "size": size, "patch": patch, "runs": len(rs),
                          "recorded": sum(r["recorded"] for r in rs),
                          "speed": round(_median(r["speed"] for r in rs)),
                          "eval_s": round(_median(r["eval_s"] for r in rs), 1),
                          "estimated_eval_s": round(_median(eval_seconds(r["cfg"], r["peak"]) for r in rs), 1),
                          "estimate_over_measured": round(_median(r["ratio"] for r in rs), 2)}))
    exponent = peak_exponent(runs)
    print(json.dumps({"runs": len(runs), "estimate_over_measured": round(_median(r["ratio"] for r in runs), 2),
                      "peak_exponent": exponent and round(exponent, 2),
                      "calibration_peak": CALIBRATION_PEAK,
                      **calibration(measured, exponent if exponent is not None else PEAK_EXPONENT)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
