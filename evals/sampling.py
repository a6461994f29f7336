"""Images and text from either family, so the benchmarks treat both the same (DESIGN:
"Transfusion samples by diffusion, Chameleon by code sampling").

Transfusion generates latents by diffusion (model/generate.py; the paper's sec 3.3 decoding
with classifier-free guidance on the noise prediction) and the KL autoencoder decodes them;
Chameleon samples VQ codes (baselines/generate.py; guidance on the code logits) and the VQ
autoencoder decodes them. Either way a benchmark gets uint8 images [N, 3, H, W] on the CPU.
Text is decoded greedily (paper sec 4.1) by each family's own KV-cached decoder.

Diffusion sampling clamps each step's predicted clean latent x0_hat to [-clip_x0, clip_x0]
(Saharia et al. 2022's static thresholding, applied in latent space). The timestep grid is
what keeps eps prediction from amplifying its error (model/diffusion.py: before issue 11 a
grid from t = 999 left sampled latents 6,000x too large); the clamp is a bound on whatever
amplification or strong guidance remains. The evaluation sets clip_x0 to the autoencoder's
own latent range (max |latent| over the encoded training images, harness `latent_range`),
which no real latent exceeds, so the clamp only removes what no image has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from baselines import generate as chameleon_generate
from baselines.chameleon import Chameleon
from data.autoencoders import ImageAutoencoder
from model import generate as transfusion_generate
from model.batch import SpecialTokens, Text
from model.diffusion import Diffusion


@dataclass
class ImageSampling:
    """How images are sampled: guidance for both families, sampler and steps for diffusion,
    code temperature for Chameleon (baselines/generate.py: greedy codes collapse)."""

    cfg_scale: float = 5.0  # paper: 5 for the family comparison, 3 for ablations
    sampler: str = "ddim"  # "ddim" | "ddpm"
    steps: int = 25  # diffusion steps (paper: 250)
    code_temperature: float = 1.0
    code_top_k: int | None = None
    clip_x0: float | None = None  # clamp x0_hat to [-c, c] at every diffusion step (module docstring)


def is_chameleon(model: nn.Module) -> bool:
    return isinstance(model, Chameleon)


def image_kind(model: nn.Module) -> str:
    """The autoencoder a family's images go through: "vq" codes or "kl" latents."""
    return "vq" if is_chameleon(model) else "kl"


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@torch.no_grad()
def sample_images(model: nn.Module, diffusion: Diffusion | None, autoencoder: ImageAutoencoder,
                  captions: list[torch.Tensor], special: SpecialTokens, how: ImageSampling,
                  generator: torch.Generator, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """One image per caption (token ids [n] each): uint8 [N, 3, H, W] on the CPU."""
    out = []
    for sl in _batches(len(captions), batch_size):
        caps = captions[sl]
        if is_chameleon(model):
            cfg = chameleon_generate.ChameleonSamplingConfig(cfg_scale=how.cfg_scale, image_top_k=how.code_top_k,
                                                             image_temperature=how.code_temperature)
            latents = chameleon_generate.text_to_image(model, caps, special, cfg, generator)
        else:
            if diffusion is None:
                raise ValueError("a Transfusion model needs its Diffusion to sample images")
            cfg = transfusion_generate.SamplingConfig(image_steps=how.steps, sampler=how.sampler,
                                                      cfg_scale=how.cfg_scale, clip_x0=how.clip_x0)
            latents = transfusion_generate.text_to_image(model, diffusion, caps, special, cfg, generator)
        out.append(autoencoder.decode(latents.to(autoencoder.device)).cpu())
        if progress is not None:
            progress(len(caps))
    return torch.cat(out)


@torch.no_grad()
def sample_captions(model: nn.Module, diffusion: Diffusion | None, images: torch.Tensor, special: SpecialTokens,
                    max_tokens: int, generator: torch.Generator, batch_size: int,
                    progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Greedy text after each encoded image (KL latents [N, C, h, w] for Transfusion, VQ codes
    [N, h, w] for Chameleon); token ids [n] per image."""
    out: list[torch.Tensor] = []
    for sl in _batches(images.shape[0], batch_size):
        x = images[sl]
        if is_chameleon(model):
            cfg = chameleon_generate.ChameleonSamplingConfig(max_new_tokens=max_tokens)
            out += chameleon_generate.caption(model, x, special, cfg, generator)
        else:
            cfg = transfusion_generate.SamplingConfig(max_new_tokens=max_tokens)
            out += transfusion_generate.caption(model, diffusion, x, special, cfg, generator)
        if progress is not None:
            progress(x.shape[0])
    return out


@torch.no_grad()
def continue_text(model: nn.Module, prompts: list[torch.Tensor], special: SpecialTokens, max_tokens: int,
                  batch_size: int) -> list[torch.Tensor]:
    """Greedy text-only continuation of each prompt (token ids [n], BOS added), no images;
    token ids [m] per prompt (the lm_eval adapter's generate_until)."""
    out: list[list] = []
    for sl in _batches(len(prompts), batch_size):
        segs = [[Text(p.long())] for p in prompts[sl]]
        if is_chameleon(model):
            cfg = chameleon_generate.ChameleonSamplingConfig(max_new_tokens=max_tokens, max_images=0)
            res = chameleon_generate.generate(model, segs, special, cfg)
        else:
            cfg = transfusion_generate.SamplingConfig(max_new_tokens=max_tokens, max_images=0)
            res = transfusion_generate.generate(model, None, segs, special, cfg)
        out += res
    return [torch.cat([s.ids for s in r if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)]) for r in out]
