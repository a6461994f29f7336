"""What this machine computes: the fp32 matmul peak that CPU wall-time estimates scale with.

    cpu_peak()                  # FLOP/s of one thread, measured once per process (~0.3 s)
    measure_matmul_peak(...)    # the measurement itself (bench/peak.py prints it)

A toy run's speed is a fraction of the machine's matmul peak that depends on the model size
(its MFU), so grid/sweeps.py stores per-size elements/s per FLOP/s of peak and multiplies by
the peak measured here: the estimates follow the machine instead of one calibration box.
"""

from __future__ import annotations

import functools
import time


def measure_matmul_peak(device="cpu", dtype=None, size: int | None = None, seconds: float = 1.5,
                        blocks: int = 5) -> float:
    """FLOP/s of size x size matmuls (default 2048 on CPU, 8192 on CUDA): best of `blocks`
    timed blocks filling about `seconds` in all, after a warm-up (thread pools, cuBLAS
    handles and heuristics, clocks)."""
    import torch

    device = torch.device(device)
    dtype = dtype or torch.float32
    size = size or (8192 if device.type == "cuda" else 2048)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    sync()
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync()
    one = max(time.perf_counter() - start, 1e-9)
    reps = max(1, int(seconds / blocks / one))
    best = 0.0
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync()
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


@functools.cache
def cpu_peak() -> float:
    """One thread's fp32 matmul peak here (what one run of the local launcher has), FLOP/s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure_matmul_peak("cpu", torch.float32, size=1024, seconds=0.3, blocks=3)
    finally:
        torch.set_num_threads(threads)
