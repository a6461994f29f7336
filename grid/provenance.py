"""What code and which machine wrote a run: recorded in its status.json (issue 16).

    code_version()    # {"commit": "97d37ab...", "dirty": False, "source_sha256": "..."}
    machine()         # {"host": ..., "cpu": ..., "cores": 2, "torch": "2.13.0+cpu", "peak_flops_1thread": ...}

A result is only worth as much as what we know of how it was made: a reader of results/ must be
able to tell which commit trained a run and on what hardware, without trusting a README typed
by hand. `commit` is the git HEAD of the tree the code was imported from, `dirty` whether its
tracked files differed from that commit (untracked files, results/ among them, do not count);
outside a git checkout (an installed copy on a cluster) both are None and `source_sha256`, a
hash of every .py file of the suite's packages, still names the code.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "baselines", "data", "evals", "grid")  # what a run executes (analysis/ does not train)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def source_sha256() -> str:
    """sha256 over the suite's .py files (relative path and bytes, in sorted order)."""
    h = hashlib.sha256()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def code_version() -> dict:
    """The commit the code came from, whether its tracked files were edited, and the source hash."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if head else None
    return {"commit": head.strip() if head else None, "dirty": bool(status.strip()) if status is not None else None,
            "source_sha256": source_sha256()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict:
    """Host, CPU, cores, torch build and, on CPU, one thread's fp32 matmul peak (grid/machine.py,
    what the wall-time estimates scale with); on CUDA the GPU's name and count."""
    import torch

    out = {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
           "python": platform.python_version()}
    if device == "cuda" and torch.cuda.is_available():
        out |= {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}
    else:
        from grid.machine import cpu_peak

        out["peak_flops_1thread"] = round(cpu_peak(), -6)
    return out
