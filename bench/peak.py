"""Measured matmul peak: the denominator of every MFU the benchmarks report.

    python -m bench.peak [--device cpu|cuda] [--dtype fp32|bf16] [--size N] [--seconds S]

Times square matmuls C = A @ B (2 * size^3 FLOPs each) for about S seconds after a warm-up,
in blocks, and prints the best block's rate as one JSON object
{"device", "dtype", "size", "peak_flops"} (FLOP/s). This is what the hardware achieves on
the best-case kernel in this process (threads, clocks, library), not the datasheet number,
so MFU against it reads "how close the model gets to a big matmul" (DESIGN "Calibration":
~341 GFLOP/s fp32 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bench.common import DTYPES, resolve_device, sync


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
                        size: int | None = None, seconds: float = 1.5, blocks: int = 5) -> float:
    """FLOP/s of size x size matmuls (default 2048 on CPU, 8192 on CUDA): best of `blocks`
    timed blocks filling about `seconds` in all."""
    device = torch.device(device)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: thread pools, cuBLAS handles and heuristics, clocks
        torch.mm(a, b, out=out)
    sync(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync(device)
    one = max(time.perf_counter() - start, 1e-9)
    reps = max(1, int(seconds / blocks / one))
    best = 0.0
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync(device)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    ap.add_argument("--size", type=int, default=None, help="matrix side (default 2048 CPU, 8192 CUDA)")
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    size = args.size or (8192 if device.type == "cuda" else 2048)
    peak = measure_matmul_peak(device, args.dtype, size, args.seconds)
    print(json.dumps({"device": str(device), "dtype": args.dtype, "size": size, "peak_flops": float(f"{peak:.4g}")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
