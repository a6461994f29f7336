"""Before / after for the sampler fix of issue 11, on one trained Transfusion run:

    python -m grid.sampler_check RUN_DIR [--images 1000] [--rms-images 256] [--out FILE.json]

For each way of sampling, the same model, captions and seeds:
    pre-fix     the sampler as it was: eps on the trailing grid from t = 999, no clamp
    grid        eps on the capped grid (model/diffusion.py), no clamp
    grid+clamp  the evaluation's default: capped grid, x0_hat clamped to the latent range
it prints the RMS of the sampled latents beside the RMS of the real held-out latents, and the
FID / KID with their intervals and reference floors (evals/harness.py's "fid" benchmark), as
one JSON object. "pre-fix" is reproduced, not remembered: a Diffusion whose grid is the old
one drives the unchanged DDIM / DDPM steps (the step formulas for eps did not change). For a
v or x0 model the old grid is today's (trailing), so "pre-fix" equals "grid" there.
"""

from __future__ import annotations

import argparse
import dataclasses
import copy
import json
import sys
import time
from pathlib import Path

import torch

from evals.harness import EvalConfig, evaluate, latent_range
from grid.trained import load_trained
from model.diffusion import Diffusion
from model.family import Family, ImageSampling

VARIANTS = ("pre-fix", "grid", "grid+clamp")


class PreFixDiffusion(Diffusion):
    """The sampler before issue 11: the trailing grid for every prediction (eps included)."""

    def timestep_schedule(self, steps: int, spacing: str = "auto") -> torch.Tensor:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an int in [1, {self.T}], got {steps!r}")
        return torch.linspace(self.T - 1, 0, steps, dtype=torch.float64).round().long()


def _latent_rms(model, family: Family, data, dataset: str, cfg: EvalConfig, clip_x0: float | None,
                n: int) -> float:
    """RMS of n latents sampled from held-out captions (first reference caption each)."""
    captions = [c[0] for c in data.image_set(dataset, cfg.split)["captions"][:n]]
    ids = [torch.tensor(data.tokenizer.encode(c), dtype=torch.long) for c in captions]
    how = ImageSampling(cfg_scale=cfg.cfg_scale, sampler=cfg.sampler, steps=cfg.sampler_steps, clip_x0=clip_x0)
    gen = torch.Generator().manual_seed(cfg.seed)
    b = cfg.sample_batch_size
    out = [family.text_to_image(model, ids[s:s + b], data.tokenizer.special, how, gen) for s in range(0, len(ids), b)]
    return float(torch.cat(out).pow(2).mean().sqrt())


def check(run_dir: str | Path, images: int = 1000, rms_images: int = 256, log=None) -> dict:
    trained = load_trained(run_dir)
    if trained.family.diffusion is None:
        raise ValueError(f"{run_dir} is a {trained.cfg.family} run: the sampler check is for a diffusion family")
    model, data, dataset = trained.model, trained.data, trained.cfg.data.dataset
    base = dataclasses.replace(trained.cfg.eval, benchmarks=("fid",), t2i_images=images, progress=False)
    real = data.encoded(dataset, base.split, "kl")
    out: dict = {"run": str(run_dir), "images": images, "sampler": base.sampler, "steps": base.sampler_steps,
                 "cfg_scale": base.cfg_scale, "latent_rms_real": float(real.float().pow(2).mean().sqrt()),
                 "latent_range": latent_range(data, dataset)}
    for variant in VARIANTS:
        start = time.time()
        family = copy.copy(trained.family)  # the same model with this variant's sampler
        family.diffusion = (PreFixDiffusion if variant == "pre-fix" else Diffusion)(trained.family.diffusion.cfg)
        clamp = out["latent_range"] if variant == "grid+clamp" else None
        cfg = dataclasses.replace(base, clip_x0=clamp or 0.0)
        res = {k: v for k, v in evaluate(model, family, data, dataset, cfg, captions=trained.cfg.data.captions).items()
               if k.startswith("t2i/")}
        res["latent_rms"] = _latent_rms(model, family, data, dataset, base, clamp, rms_images)
        res["seconds"] = round(time.time() - start, 1)
        out[variant] = res
        if log is not None:
            log(f"[sampler_check] {variant}: {json.dumps(res)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--images", type=int, default=1000, help="generated (and reference) images for FID / KID")
    ap.add_argument("--rms-images", type=int, default=256, help="latents sampled for the RMS")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    try:
        res = check(args.run_dir, args.images, args.rms_images, log=lambda s: print(s, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=1, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
