"""How long a run takes and what a scheduler must give it.

    estimated_seconds(cfg)            # wall seconds of one run here (CPU sizes) or from 6ND (paper)
    sweep_wall_seconds(specs, cores)  # a CPU sweep with the local launcher, one process per core
    resources_for(cfg)                # the per-size SLURM default (Resources)

CPU estimates follow the machine: a run's elements/s is a fraction of the machine's matmul peak
that depends on the size and the family, so CPU_SPEED holds elements/s per FLOP/s of one
thread's fp32 matmul peak (grid/machine.cpu_peak, measured at launch), from bench.train at seq
256, batch 8, one thread per process as the local launcher runs them (bench/RESULTS.md,
2026-12-02, peak 1.0e11 FLOP/s). Sizes past cpu-6.4M assume cpu-6.4M's 6N MFU. Evaluation adds
`eval_seconds` at that peak, scaled the same way. The local launcher runs one process per core,
so a sweep's wall time is the sum over its runs divided by the cores; tests/unit/test_sweeps.py
holds every CPU sweep to its budget.

Paper sizes take their time from 6ND at an assumed GPU_FLOPS per GPU; SLURM jobs are capped at
MAX_JOB_MIN and rely on checkpointed requeue for longer runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grid.config import RunConfig
from grid.machine import cpu_peak
from model.accounting import backbone_params
from model.sizes import CPU_SIZES, get_size

# Elements/s per FLOP/s of one thread's fp32 matmul peak (module docstring; bench/RESULTS.md).
# cpu-0.027M and cpu-0.056M: the median elements/s of results/lr-sweep's finished runs there (two
# processes on 2 cores, 2026-12-02, one-thread peak 8.5e10), per FLOP/s of that peak; below
# 0.11M a step is mostly per-op overhead, the embedding and the 2,048-id head, so they are
# little faster than cpu-0.11M (Chameleon not at all).
CPU_SPEED = {
    "transfusion": {"cpu-0.027M": 3.24e-7, "cpu-0.056M": 1.93e-7, "cpu-0.11M": 2.79e-7, "cpu-0.33M": 1.48e-7,
                    "cpu-0.8M": 8.5e-8, "cpu-2.7M": 3.4e-8, "cpu-6.4M": 1.55e-8},
    "chameleon": {"cpu-0.027M": 1.31e-7, "cpu-0.056M": 1.18e-7, "cpu-0.11M": 1.65e-7, "cpu-0.33M": 1.04e-7,
                  "cpu-0.8M": 7.1e-8, "cpu-2.7M": 2.9e-8, "cpu-6.4M": 1.45e-8},
}
CALIBRATION_PEAK = 1.0e11  # FLOP/s: one thread's fp32 matmul peak where CPU_SPEED was measured
# Seconds per run at CALIBRATION_PEAK for the default benchmarks, by size: results/demo's
# meta/seconds_* summed, both families' mean (2026-11; 17 s at cpu-0.11M, 26 s at 0.33M, 43 s at
# 0.8M), plus START_SECONDS for the process and the held-out losses. Smaller sizes cost what
# cpu-0.11M does (the autoencoder, the checker and the sampler loop do not shrink); larger ones
# grow with N^0.5, as 0.11M -> 0.8M did. A run with the text benchmark alone costs TEXT_SECONDS.
EVAL_SECONDS = {"cpu-0.11M": 17.0, "cpu-0.33M": 26.0, "cpu-0.8M": 43.0}
START_SECONDS, TEXT_SECONDS = 4.0, 2.0

# Paper scale: per-size layout (nodes, GPUs per node); time from 6ND.
PAPER_LAYOUT = {"0.16B": (1, 8), "0.37B": (1, 8), "0.76B": (2, 8), "1.4B": (2, 8), "7B": (4, 8)}
GPU_FLOPS = 4e14  # assumed sustained bf16 FLOP/s per GPU (~40% MFU on an H100)
MAX_JOB_MIN = 48 * 60  # one SLURM job; longer runs requeue and resume from checkpoints


@dataclass
class Resources:
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: int = 4
    time_min: int = 30
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""


def _cpu_rate(cfg: RunConfig, peak: float) -> float:
    """Training elements/s of a CPU run on a machine of this one-thread peak."""
    table = CPU_SPEED[cfg.family]
    if cfg.size in table:
        return table[cfg.size] * peak
    ref = "cpu-6.4M"  # larger sizes: cpu-6.4M's 6N MFU
    mfu = table[ref] * 6 * backbone_params(get_size(ref))
    return mfu * peak / (6 * backbone_params(get_size(cfg.size)))


def eval_seconds(cfg: RunConfig) -> float:
    """A CPU run's start-up, held-out losses and benchmarks at CALIBRATION_PEAK (EVAL_SECONDS)."""
    if set(cfg.eval.benchmarks) <= {"text"}:
        return START_SECONDS + TEXT_SECONDS
    n = backbone_params(get_size(cfg.size))
    if cfg.size in EVAL_SECONDS:
        bench = EVAL_SECONDS[cfg.size]
    elif n < backbone_params(get_size("cpu-0.11M")):
        bench = EVAL_SECONDS["cpu-0.11M"]
    else:
        bench = EVAL_SECONDS["cpu-0.8M"] * (n / backbone_params(get_size("cpu-0.8M"))) ** 0.5
    return START_SECONDS + bench


def estimated_seconds(cfg: RunConfig, peak: float | None = None) -> float:
    """Expected wall time of one run: CPU sizes from CPU_SPEED at this machine's one-thread
    peak (measured unless given), evaluation included; paper sizes from 6ND."""
    if cfg.size in CPU_SIZES:
        peak = peak or cpu_peak()
        return cfg.D / _cpu_rate(cfg, peak) + eval_seconds(cfg) * CALIBRATION_PEAK / peak
    nodes, gpus = PAPER_LAYOUT[cfg.size]
    return 6 * backbone_params(get_size(cfg.size)) * cfg.D / (GPU_FLOPS * nodes * gpus)


def sweep_wall_seconds(specs: list, cores: int, peak: float | None = None) -> float:
    """A CPU sweep's wall time (specs: grid/sweeps.RunSpec) with the local launcher's one
    single-threaded process per core."""
    return sum(estimated_seconds(s.cfg, peak) for s in specs) / cores


def resources_for(cfg: RunConfig) -> Resources:
    """Per-size defaults: CPU sizes 1 CPU, no GPU, 2x the estimate (at least 10 min); paper
    sizes 8 GPUs per node (one task per GPU, 8 CPUs each), 1.25x the 6ND estimate + 30 min,
    capped at MAX_JOB_MIN."""
    est_min = estimated_seconds(cfg) / 60
    if cfg.size in CPU_SIZES:
        return Resources(cpus_per_task=1, gpus_per_node=0, mem_gb=4, time_min=max(10, math.ceil(2 * est_min)))
    nodes, gpus = PAPER_LAYOUT[cfg.size]
    return Resources(nodes=nodes, gpus_per_node=gpus, cpus_per_task=8, mem_gb=480,
                     time_min=min(MAX_JOB_MIN, math.ceil(1.25 * est_min) + 30))
