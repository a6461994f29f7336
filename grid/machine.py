"""What this machine computes: the fp32 matmul peak that CPU wall-time estimates scale with.

    cpu_peak()                  # FLOP/s of one thread, measured once per machine (~0.3 s), then read back
    measure_matmul_peak(...)    # the measurement itself (bench/peak.py prints it)

A toy run's speed is a fraction of the machine's matmul peak that depends on the model size
(its MFU), so grid/estimates.py stores per-size elements/s per FLOP/s of peak and multiplies by
the peak measured here: the estimates follow the machine instead of one calibration box.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

from data.atomic import write_text_atomic


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


def _cache_file() -> Path:
    root = os.environ.get("TRANSFUSION_CACHE") or Path.home() / ".cache" / "transfusion-scaling"
    return Path(root) / "cpu_peak.json"


def _machine_key() -> str:
    """What the peak depends on, readable without importing torch."""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "none"
    return f"{platform.node()}|{model}|{os.cpu_count()} cores|torch {torch_version}"


@functools.cache
def cpu_peak() -> float:
    """One thread's fp32 matmul peak here (what one run of the local launcher has), FLOP/s.
    Measured the first time on a machine and kept in $TRANSFUSION_CACHE/cpu_peak.json (default
    ~/.cache/transfusion-scaling), so listing and dry-running sweeps need not import torch."""
    path, key = _cache_file(), _machine_key()
    try:
        known = json.loads(path.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):  # none yet, or corrupt: measured and rewritten below
        known = {}
    if isinstance(known.get(key), (int, float)):
        return float(known[key])
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peak = measure_matmul_peak("cpu", torch.float32, size=1024, seconds=0.3, blocks=3)
    finally:
        torch.set_num_threads(threads)
    try:
        write_text_atomic(path, json.dumps({**known, key: peak}, indent=1))
    except OSError:
        pass  # a read-only home: measure again next time
    return peak
