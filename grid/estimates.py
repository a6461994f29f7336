"""How long a run takes and what a scheduler must give it.

    estimated_seconds(cfg)            # wall seconds of one run here (CPU sizes) or from 6ND (paper)
    sweep_wall_seconds(specs, cores)  # a CPU sweep with the local launcher, one process per core
    resources_for(cfg)                # the per-size SLURM default (Resources)

CPU estimates follow the machine: a run's elements/s is CPU_SPEED at CALIBRATION_PEAK, scaled by
(peak / CALIBRATION_PEAK) ** PEAK_EXPONENT, where peak is one thread's fp32 matmul peak measured
at launch (grid/machine.cpu_peak). Toy models are small enough that a step is partly per-op
overhead and memory traffic, so their speed grows more slowly than the matmul peak: between the
two machines this suite has run on, 2.1x for 2.5x the peak; the runs on each shared their cores
under different loads, so this exponent is known to about +-0.2.

Every constant is what `python -m bench.estimates results --unrecorded-peak 8.5e10` prints from
the finished runs of issue 16 (two single-threaded runs sharing 2 cores, as the local launcher
runs them; bench/RESULTS.md has its output). Evaluation adds EVAL_SECONDS, U-Net patches add
UNET_S_PER_ELEMENT and UNET_EVAL_SECONDS, all at CALIBRATION_PEAK and scaled the same way. The
local launcher runs one process per core, starting the longest run first on the first core to
come free, so a sweep's wall time is that schedule's makespan: at least its longest run, not just
the sum over its runs divided by the cores; tests/unit/test_sweeps.py holds every CPU sweep to its
budget.

Paper sizes take their time from 6ND at an assumed GPU_FLOPS per GPU; SLURM jobs are capped at
MAX_JOB_MIN and rely on checkpointed requeue for longer runs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from grid.config import RunConfig
from grid.machine import cpu_peak
from model.accounting import backbone_params
from model.sizes import CPU_SIZES, get_size

CALIBRATION_PEAK = 2.15e11  # FLOP/s: one thread's fp32 matmul peak of the machine of the reruns
PEAK_EXPONENT = 0.8  # speed ~ peak ** this (module docstring); 0.58-0.82 as the reruns landed
# Training elements/s at CALIBRATION_PEAK with linear patches (bench.estimates' "speed").
# cpu-2.7M and cpu-6.4M have no runs: bench.train's quiet one-process values (bench/RESULTS.md,
# 2026-12-02) times what the runs measured over bench.train at cpu-0.8M, so the MFU that grows
# with size there is kept. Sizes past cpu-6.4M assume cpu-6.4M's 6N MFU.
CPU_SPEED = {
    "transfusion": {"cpu-0.027M": 52148, "cpu-0.056M": 35757, "cpu-0.11M": 28432, "cpu-0.33M": 17376,
                    "cpu-0.8M": 10083, "cpu-2.7M": 4033, "cpu-6.4M": 1839},
    "chameleon": {"cpu-0.027M": 21447, "cpu-0.056M": 15786, "cpu-0.11M": 15223, "cpu-0.33M": 11466,
                  "cpu-0.8M": 7588, "cpu-2.7M": 3099, "cpu-6.4M": 1550},
}
# U-Net patches: seconds per element on top of the linear model's, by patch size, as measured
# (bench/estimates.py says why no simple law carries one patch size to another). Until issue 16
# this was the patch-2 value times the patch area, which promised 87 min for the patch-8 run
# that trains at 22.
UNET_S_PER_ELEMENT = {1: 6.83e-6, 2: 6.87e-5, 4: 1.49e-4, 8: 2.04e-4}
# Evaluation seconds per run (start-up, held-out losses, the default benchmarks), by size; smaller
# sizes cost what the smallest measured one does (the autoencoder, the checker and the sampler
# loop do not shrink), larger ones grow with N^0.5. U-Net patches add UNET_EVAL_SECONDS (the
# sampler runs the U-Net at every step). A run with the text benchmark alone costs TEXT_SECONDS.
EVAL_SECONDS = {"cpu-0.027M": 13.2, "cpu-0.056M": 15.7, "cpu-0.11M": 17.8, "cpu-0.33M": 26.3, "cpu-0.8M": 37.3}
UNET_EVAL_SECONDS, TEXT_SECONDS = 53.6, 4.8

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
    """Training elements/s of a CPU run with linear patches on a machine of this one-thread peak."""
    table = CPU_SPEED[cfg.family]
    if cfg.size in table:
        speed = table[cfg.size]
    else:
        ref = "cpu-6.4M"  # larger sizes: cpu-6.4M's 6N MFU
        speed = table[ref] * backbone_params(get_size(ref)) / backbone_params(get_size(cfg.size))
    return speed * (peak / CALIBRATION_PEAK) ** PEAK_EXPONENT


def eval_seconds(cfg: RunConfig, peak: float) -> float:
    """A CPU run's start-up, held-out losses and benchmarks on a machine of this peak (EVAL_SECONDS)."""
    slower = (CALIBRATION_PEAK / peak) ** PEAK_EXPONENT
    if set(cfg.eval.benchmarks) <= {"text"}:
        return TEXT_SECONDS * slower
    n = backbone_params(get_size(cfg.size))
    sizes = sorted(EVAL_SECONDS, key=lambda s: backbone_params(get_size(s)))
    if cfg.size in EVAL_SECONDS:
        seconds = EVAL_SECONDS[cfg.size]
    elif n < backbone_params(get_size(sizes[0])):
        seconds = EVAL_SECONDS[sizes[0]]
    else:
        seconds = EVAL_SECONDS[sizes[-1]] * (n / backbone_params(get_size(sizes[-1]))) ** 0.5
    unet = UNET_EVAL_SECONDS if cfg.model.patch_kind == "unet" else 0.0
    return (seconds + unet) * slower


def estimated_seconds(cfg: RunConfig, peak: float | None = None) -> float:
    """Expected wall time of one run: CPU sizes from CPU_SPEED at this machine's one-thread
    peak (measured unless given), U-Net patches and evaluation included; paper sizes from 6ND."""
    if cfg.size in CPU_SIZES:
        peak = peak or cpu_peak()
        per_element = 1 / _cpu_rate(cfg, peak)
        if cfg.model.patch_kind == "unet":
            nearest = min(UNET_S_PER_ELEMENT, key=lambda p: abs(math.log(p / cfg.model.patch_size)))
            per_element += UNET_S_PER_ELEMENT[nearest] * (CALIBRATION_PEAK / peak) ** PEAK_EXPONENT
        return cfg.D * per_element + eval_seconds(cfg, peak)
    nodes, gpus = PAPER_LAYOUT[cfg.size]
    return 6 * backbone_params(get_size(cfg.size)) * cfg.D / (GPU_FLOPS * nodes * gpus)


def sweep_wall_seconds(specs: list, cores: int, peak: float | None = None) -> float:
    """A CPU sweep's wall time (specs: grid/sweeps.RunSpec) with the local launcher's one
    single-threaded process per core: longest first, each on the first core free."""
    free = [0.0] * max(1, cores)
    for seconds in sorted((estimated_seconds(s.cfg, peak) for s in specs), reverse=True):
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


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
