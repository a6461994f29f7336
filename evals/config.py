"""The benchmark settings (`EvalConfig`), apart from the benchmarks: a run config holds one,
and reading a run config should not import the evaluation's stack (torch, torchmetrics).
What each setting does is evals/harness.py's docstring."""

from __future__ import annotations

from dataclasses import dataclass

BENCHMARKS = ("text", "caption", "fid", "geneval", "cond", "clip", "lm_eval")
SAMPLERS = ("ddim", "ddpm")


@dataclass
class EvalConfig:
    """Sample counts default to the CPU demo (evals/harness.py gives the budget); a cluster
    raises them toward the paper's."""

    seed: int = 0
    batch_size: int = 32  # rows per text forward pass
    sample_batch_size: int = 250  # images / captions per sampling call, rows per diagnostic pass
    benchmarks: tuple[str, ...] = ("text", "caption", "fid", "geneval", "cond")
    split: str = "test"  # held-out image split for captioning, text -> image and diagnostics
    text_tokens: int = 8192  # scored per held-out corpus (paper: 20M)
    text_context: int = 256  # window for perplexity (the run's seq_len)
    caption_images: int = 1000  # paper: 5,000 (Karpathy test)
    caption_tokens: int = 24  # max new tokens per caption
    t2i_images: int = 1000  # FID / KID sample size, generated and reference each (paper: 30,000)
    geneval_per_category: int = 32
    cond_images: int = 500  # held-out pairs for the conditioning diagnostics
    cond_timesteps: tuple[int, ...] = (100, 500, 900)  # where conditional and unconditional eps are compared
    bootstrap: int = 200  # resamples for the FID / KID / diagnostic intervals (0: no intervals)
    cfg_scale: float = 5.0
    sampler: str = "ddim"
    sampler_steps: int = 25  # paper: 250
    clip_x0: float = -1.0  # x0_hat clamp: < 0 the KL latents' range (max |latent|, train split); 0 off; > 0 this
    code_temperature: float = 1.0  # Chameleon code sampling
    inception_weights: str = ""  # local InceptionV3 weights: adds t2i/fid_inception (needs torch-fidelity)
    clip_checkpoint: str = ""  # local Hugging Face CLIP directory, for the clip benchmark
    lm_eval_tasks: tuple[str, ...] = ()  # e.g. lm_eval_adapter.LLAMA_TASKS
    lm_eval_include: str = ""  # folder of extra lm_eval task YAMLs
    lm_eval_limit: int = 0  # examples per task; 0 = all
    progress: bool = True  # tqdm bars and one line per benchmark on stderr
    # Intra-op CPU threads while evaluating (0: leave torch's setting). The benchmarks run many
    # small ops; on a shared 2-core machine two OpenMP threads wait on each other at every op
    # (a 100k-element multiply took 8.7 ms with 2 threads, 0.013 ms with 1) and the whole
    # evaluation ran 6x slower (see the module docstring's budget).
    threads: int = 1

    def validate(self) -> None:
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        if bad:
            raise ValueError(f"unknown benchmark(s) {bad}; valid: {', '.join(BENCHMARKS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}: expected one of {SAMPLERS}")
        for name in ("batch_size", "sample_batch_size", "text_tokens", "text_context", "caption_images",
                     "caption_tokens", "geneval_per_category", "sampler_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("t2i_images", "cond_images"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}={getattr(self, name)}: need at least 2 images")
        if self.bootstrap < 0 or self.threads < 0:
            raise ValueError(f"bootstrap={self.bootstrap}, threads={self.threads}: must be >= 0 (0: none / torch's own)")
        if not self.cond_timesteps:
            raise ValueError("cond_timesteps is empty: give at least one timestep, e.g. 500")
        if "clip" in self.benchmarks and not self.clip_checkpoint:
            raise ValueError("benchmark 'clip' needs clip_checkpoint=<local CLIP directory>")
        if "lm_eval" in self.benchmarks and not self.lm_eval_tasks:
            raise ValueError("benchmark 'lm_eval' needs lm_eval_tasks=<task,task,...>")
