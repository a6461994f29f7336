"""Measured matmul peak: the denominator of every MFU the benchmarks report.

    python -m bench.peak [--device cpu|cuda] [--dtype fp32|bf16] [--size N] [--seconds S]

Times square matmuls C = A @ B (2 * size^3 FLOPs each) for about S seconds after a warm-up,
in blocks (grid/machine.py, which the launcher's wall-time estimates use too), and prints the
best block's rate as one JSON object
{"device", "dtype", "size", "peak_flops"} (FLOP/s). This is what the hardware achieves on
the best-case kernel in this process (threads, clocks, library), not the datasheet number,
so MFU against it reads "how close the model gets to a big matmul" (DESIGN "Calibration":
~341 GFLOP/s fp32 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import DTYPES, resolve_device
from grid.machine import measure_matmul_peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    ap.add_argument("--size", type=int, default=None, help="matrix side (default 2048 CPU, 8192 CUDA)")
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    size = args.size or (8192 if device.type == "cuda" else 2048)
    peak = measure_matmul_peak(device, DTYPES[args.dtype], size, args.seconds)
    print(json.dumps({"device": str(device), "dtype": args.dtype, "size": size, "peak_flops": float(f"{peak:.4g}")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
