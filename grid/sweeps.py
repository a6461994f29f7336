"""Registered sweeps: functions returning run specs derived from one base (STYLE principle 5).

    specs = get_sweep("demo")      # list[RunSpec]; an unknown name lists the valid ones
    specs = sweep_specs("demo", ["eval.t2i_images=200"])   # with --set overrides on every run
    ids = run_ids(specs)           # content-derived ids, ValueError if two specs share one
    SWEEPS                         # name -> builder, filled by @register("name")

A `RunSpec` is a `RunConfig` plus the `Resources` a scheduler needs. Every sweep starts from
one base config per scale (`_cpu_base`, `_paper_base`) and varies it with
`dataclasses.replace`, so a sweep states only what it varies. grid/ablations.py's
`ABLATION_KNOBS` names, per ablation, the config keys it varies (everything else is held
fixed; tests check this).

Wall-time estimates (`estimated_seconds`) follow the machine: a run's elements/s is a fraction
of the machine's matmul peak that depends on the size and the family, so CPU_SPEED holds
elements/s per FLOP/s of one thread's fp32 matmul peak (grid/machine.cpu_peak, measured at
launch), from bench.train at seq 256, batch 8, one thread per process as the local launcher
runs them (bench/RESULTS.md, 2026-12-02, peak 1.0e11 FLOP/s). Sizes past cpu-6.4M assume
cpu-6.4M's 6N MFU. Evaluation adds EVAL_SECONDS at that peak, scaled the same way. The local
launcher runs one process per core, so a sweep's wall time is the sum over its runs divided
by the cores (`sweep_wall_seconds`). At the calibration peak on 2 cores:

    demo       3 sizes x 3 budgets (0.2/0.4/0.8M elements) x 2 families = 18 runs: ~13 minutes
               (measured before this calibration: 12 min 18 s).
    toy-paper  5 sizes (cpu-0.11M .. cpu-6.4M) x 4 budgets (0.25/0.5/1/2M) x 2 families = 40
               runs: ~1.5 hours.
    ablation-* at cpu-0.8M, D = 1M unless the ablation varies size: ~3 core-minutes per run.

The paper sweep's resources come from 6ND at an assumed GPU_FLOPS per GPU; SLURM jobs are
capped at MAX_JOB_MIN and rely on checkpointed requeue for longer runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from grid.ablations import ABLATION_KNOBS
from grid.config import DataConfig, ModelKnobs, RunConfig, apply_overrides
from grid.family import FAMILIES
from grid.identity import run_id
from grid.machine import cpu_peak
from evals.config import EvalConfig
from model.accounting import backbone_params
from model.sizes import CPU_SIZES, PAPER_SIZES, get_size

# Elements/s per FLOP/s of one thread's fp32 matmul peak (module docstring; bench/RESULTS.md).
CPU_SPEED = {
    "transfusion": {"cpu-0.11M": 2.79e-7, "cpu-0.33M": 1.48e-7, "cpu-0.8M": 8.5e-8, "cpu-2.7M": 3.4e-8,
                    "cpu-6.4M": 1.55e-8},
    "chameleon": {"cpu-0.11M": 1.65e-7, "cpu-0.33M": 1.04e-7, "cpu-0.8M": 7.1e-8, "cpu-2.7M": 2.9e-8,
                  "cpu-6.4M": 1.45e-8},
}
CALIBRATION_PEAK = 1.0e11  # FLOP/s: one thread's fp32 matmul peak where CPU_SPEED was measured
EVAL_SECONDS = 45.0  # per run at CALIBRATION_PEAK: the benchmarks at cpu-0.8M (~41 s measured) + start-up

# Paper scale: per-size layout (nodes, GPUs per node); time from 6ND.
PAPER_LAYOUT = {"0.16B": (1, 8), "0.37B": (1, 8), "0.76B": (2, 8), "1.4B": (2, 8), "7B": (4, 8)}
GPU_FLOPS = 4e14  # assumed sustained bf16 FLOP/s per GPU (~40% MFU on an H100)
MAX_JOB_MIN = 48 * 60  # one SLURM job; longer runs requeue and resume from checkpoints
PAPER_SEQ_LEN, PAPER_BATCH_ROWS = 4096, 512  # 2,097,152 elements per step (paper: "2M")
PAPER_STEPS = 250_000  # sec 4.1; 250k * 2^21 = 0.52T elements ("0.5T")


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


@dataclass
class RunSpec:
    """A run config and what a scheduler needs for it: `fixed_resources` when a sweep sets them,
    else the per-size default, computed when asked for (it measures this machine's peak, which
    listing a sweep does not need)."""

    cfg: RunConfig
    fixed_resources: Resources | None = None

    @property
    def resources(self) -> Resources:
        return self.fixed_resources or resources_for(self.cfg)

    @property
    def run_id(self) -> str:
        return run_id(self.cfg)


# ------------------------------------------------------------------ registry

SWEEPS: dict[str, Callable[[], list[RunSpec]]] = {}


def register(name: str) -> Callable[[Callable[[], list[RunSpec]]], Callable[[], list[RunSpec]]]:
    def deco(fn: Callable[[], list[RunSpec]]) -> Callable[[], list[RunSpec]]:
        if name in SWEEPS:
            raise ValueError(f"sweep {name!r} registered twice")
        SWEEPS[name] = fn
        return fn
    return deco


def get_sweep(name: str) -> list[RunSpec]:
    """The sweep's run specs; ValueError (one line) listing the valid names for an unknown one."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; valid sweeps: {', '.join(SWEEPS)}")
    return SWEEPS[name]()


def sweep_specs(name: str, overrides: list[str] = ()) -> list[RunSpec]:
    """The sweep's run specs with the --set overrides applied to every config (validated)."""
    specs = get_sweep(name)
    if not overrides:
        return specs
    return [replace(s, cfg=apply_overrides(s.cfg, list(overrides))) for s in specs]


def run_ids(specs: list[RunSpec]) -> list[str]:
    """The specs' run ids in order; ValueError if two specs resolve to the same id."""
    seen: dict[str, int] = {}
    ids = []
    for i, spec in enumerate(specs):
        rid = run_id(spec.cfg)
        if rid in seen:
            raise ValueError(f"specs {seen[rid]} and {i} resolve to the same run id {rid}")
        seen[rid] = i
        ids.append(rid)
    return ids


# ------------------------------------------------------------------ resources and estimates

def _cpu_rate(cfg: RunConfig, peak: float) -> float:
    """Training elements/s of a CPU run on a machine of this one-thread peak."""
    table = CPU_SPEED[cfg.family]
    if cfg.size in table:
        return table[cfg.size] * peak
    ref = "cpu-6.4M"  # larger sizes: cpu-6.4M's 6N MFU
    mfu = table[ref] * 6 * backbone_params(get_size(ref))
    return mfu * peak / (6 * backbone_params(get_size(cfg.size)))


def estimated_seconds(cfg: RunConfig, peak: float | None = None) -> float:
    """Expected wall time of one run: CPU sizes from CPU_SPEED at this machine's one-thread
    peak (measured unless given), evaluation included; paper sizes from 6ND."""
    if cfg.size in CPU_SIZES:
        peak = peak or cpu_peak()
        return cfg.D / _cpu_rate(cfg, peak) + EVAL_SECONDS * CALIBRATION_PEAK / peak
    nodes, gpus = PAPER_LAYOUT[cfg.size]
    return 6 * backbone_params(get_size(cfg.size)) * cfg.D / (GPU_FLOPS * nodes * gpus)


def sweep_wall_seconds(specs: list[RunSpec], cores: int, peak: float | None = None) -> float:
    """A CPU sweep's wall time with the local launcher's one single-threaded process per core."""
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


def _spec(cfg: RunConfig) -> RunSpec:
    return RunSpec(cfg=cfg)


def _grid(base: RunConfig, sizes: tuple[str, ...], budgets: tuple[int, ...]) -> list[RunSpec]:
    return [_spec(replace(base, family=f, size=s, D=d)) for s in sizes for d in budgets for f in FAMILIES]


# ------------------------------------------------------------------ bases

def _cpu_base() -> RunConfig:
    """Toy scale on the embedded default data: seq_len 256 (holds a Chameleon image, 64 codes
    + BOI/EOI, with room to spare), batch_rows 8, fp32 on CPU.

    Transfusion predicts v here, not the paper's eps (which `_paper_base` keeps). Measured on
    toy-paper's transfusion-cpu-0.8M-D1M (issue 11): the eps model's error stays at MSE 0.075
    for every t >= 900, and x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar) multiplies it
    by sqrt((1 - abar) / abar), 16 at the first of 25 steps, so its samples had latent RMS 4.3
    against the data's 1.03 and an FID (60) no better than decoded random latents (57), with
    any sampler that starts from noise. v = sqrt(abar) eps - sqrt(1 - abar) x0 gives
    x0_hat = sqrt(abar) x_t - sqrt(1 - abar) v_hat, which never divides by sqrt(abar)
    (Salimans & Ho 2022; Lin et al. 2024; Karras et al. 2022 sec 5 make the same point for
    their preconditioning): the same config with v sampled latent RMS 0.97 and FID 28.6.
    The paper's models are large enough to learn eps at high noise; a 0.8M one is not."""
    return RunConfig(size="cpu-0.8M", D=1_000_000, seq_len=256, batch_rows=8, device="cpu", precision="fp32",
                     model=ModelKnobs(prediction="v"))


def _paper_base() -> RunConfig:
    """The paper's controlled-comparison recipe (sec 4.1-4.2): seq 4096, batch 512 rows (~2M
    elements), bf16 on CUDA, lr per family (resolved: Transfusion 3e-4, Chameleon 1e-4), linear
    2x2 patches with intra-image bidirectional attention (the paper's Chameleon comparison uses
    the linear encoder; U-Net appears in the ablations and the final 7B model). Data paths come
    from config (`--set data.data_dir=...`); data_dir is not part of the run id."""
    return RunConfig(size="0.76B", D=PAPER_STEPS * PAPER_SEQ_LEN * PAPER_BATCH_ROWS,
                     seq_len=PAPER_SEQ_LEN, batch_rows=PAPER_BATCH_ROWS, precision="bf16", device="cuda",
                     model=ModelKnobs(patch_kind="linear", patch_size=2, image_attention="bidirectional"),
                     checkpoint_every=1000, eval_every=10_000)


# ------------------------------------------------------------------ scaling sweeps

@register("demo")
def demo() -> list[RunSpec]:
    """3 sizes x 3 budgets x 2 families, ~12 min on 2 cores (see the module docstring)."""
    return _grid(_cpu_base(), ("cpu-0.11M", "cpu-0.33M", "cpu-0.8M"), (200_000, 400_000, 800_000))


@register("toy-paper")
def toy_paper() -> list[RunSpec]:
    """5 sizes x 4 budgets x 2 families, ~1.5 h on 2 cores (see the module docstring)."""
    return _grid(_cpu_base(), ("cpu-0.11M", "cpu-0.33M", "cpu-0.8M", "cpu-2.7M", "cpu-6.4M"),
                 (250_000, 500_000, 1_000_000, 2_000_000))


# Peak learning rates tried per family at toy scale (issue 14): the paper's two (1e-4 Chameleon,
# 3e-4 Transfusion) and three above, the same grid for both families so the comparison is fair.
# 1e-2 was added after the first four: at cpu-0.11M both families were still best at 3e-3, the
# grid's edge (results/lr-sweep, analysis/lr.py).
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LR_SWEEP_SIZES = ("cpu-0.11M", "cpu-0.33M")
LR_SWEEP_ELEMENTS_PER_PARAM = 20  # about compute-optimal (Hoffmann et al. 2022), per non-embedding parameter


@register("lr-sweep")
def lr_sweep() -> list[RunSpec]:
    """The learning rate per family at toy scale: 2 sizes x 5 peak LRs x 2 families, each trained
    on 20 elements per non-embedding parameter with the toy recipe (warmup 1.6% of the steps,
    cosine to 5%), judged by held-out loss (benchmarks: text only). ~65 minutes on 2 cores."""
    base = replace(_cpu_base(), eval=EvalConfig(benchmarks=("text",)))
    return [_spec(replace(base, family=f, size=s, D=LR_SWEEP_ELEMENTS_PER_PARAM * backbone_params(get_size(s)),
                          optim=replace(base.optim, lr=lr)))
            for s in LR_SWEEP_SIZES for lr in LR_GRID for f in FAMILIES]


@register("paper")
def paper() -> list[RunSpec]:
    """The paper's five sizes x a 2^k budget ladder up to 250k steps (0.52T elements) x 2
    families: D = 0.52T / 16 ... 0.52T, i.e. 15,625 ... 250,000 steps of 2^21 elements."""
    top = _paper_base().D
    return _grid(_paper_base(), tuple(PAPER_SIZES), tuple(top >> k for k in (4, 3, 2, 1, 0)))


# ------------------------------------------------------------------ ablations (Tables 4-8)

def _ablation(name: str):
    """Register an ablation sweep designed in grid/ablations.py (its varied keys)."""
    if name not in ABLATION_KNOBS:
        raise ValueError(f"ablation {name!r} has no entry in grid/ablations.py ABLATION_KNOBS")
    return register(name)


def _knobs(base: RunConfig, **changes) -> RunConfig:
    return replace(base, model=replace(base.model, **changes))


@_ablation("ablation-attention")
def ablation_attention() -> list[RunSpec]:
    """Table 5: causal vs intra-image bidirectional, linear and U-Net encoders."""
    base = _cpu_base()
    return [_spec(_knobs(base, image_attention=a, patch_kind=k))
            for k in ("linear", "unet") for a in ("causal", "bidirectional")]


@_ablation("ablation-patch")
def ablation_patch() -> list[RunSpec]:
    """Table 6: patch size 1/2/4/8 x linear/U-Net (8 on an 8x8 latent is one patch per image)."""
    base = _cpu_base()
    return [_spec(_knobs(base, patch_size=p, patch_kind=k)) for k in ("linear", "unet") for p in (1, 2, 4, 8)]


@_ablation("ablation-encoder-size")
def ablation_encoder_size() -> list[RunSpec]:
    """Table 7: linear vs U-Net encoder/decoder across model sizes."""
    base = _cpu_base()
    return [_spec(_knobs(replace(base, size=s), patch_kind=k))
            for s in ("cpu-0.33M", "cpu-0.8M", "cpu-2.7M") for k in ("linear", "unet")]


@_ablation("ablation-noise-limit")
def ablation_noise_limit() -> list[RunSpec]:
    """Table 8: noise limit off vs t <= 500 for image-first pairs (paper: U-Net 2x2)."""
    base = _knobs(_cpu_base(), patch_kind="unet")
    return [_spec(_knobs(base, noise_limit=n)) for n in (None, 500)]


@_ablation("ablation-lambda")
def ablation_lambda() -> list[RunSpec]:
    """The diffusion loss weight (paper default 5)."""
    base = _cpu_base()
    return [_spec(_knobs(base, lambda_diffusion=lam)) for lam in (1.0, 2.5, 5.0, 10.0)]


@_ablation("ablation-text-only")
def ablation_text_only() -> list[RunSpec]:
    """Table 4: the text-only cost of each family: Transfusion on text only (the Llama recipe)
    and with diffusion data; Chameleon (with its stability changes) on text only and with image
    tokens. D is the same for all four, so multimodal runs see half as much text."""
    base = _cpu_base()
    return [_spec(replace(base, family=f, data=replace(base.data, text_share=t)))
            for f in FAMILIES for t in (1.0, DataConfig.text_share)]


__all__ = ["ABLATION_KNOBS", "CALIBRATION_PEAK", "CPU_SPEED", "Resources", "RunSpec", "SWEEPS", "estimated_seconds", "get_sweep",
           "register", "resources_for", "run_ids", "sweep_specs", "sweep_wall_seconds"]
