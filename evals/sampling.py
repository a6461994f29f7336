"""Images and text from either family, so the benchmarks treat both the same (DESIGN:
"Transfusion samples by diffusion, Chameleon by code sampling").

Each family samples through its spec (model/family.py): Transfusion generates latents by
diffusion (model/generate.py; the paper's sec 3.3 decoding with classifier-free guidance on
the noise prediction) and the KL autoencoder decodes them; Chameleon samples VQ codes
(baselines/generate.py; guidance on the code logits) and the VQ autoencoder decodes them.
Either way a benchmark gets uint8 images [N, 3, H, W] on the CPU. Text is decoded greedily
(paper sec 4.1) with the KV cache.

Diffusion sampling clamps each step's predicted clean latent x0_hat to [-clip_x0, clip_x0]
(Saharia et al. 2022's static thresholding, applied in latent space). The timestep grid is
what keeps eps prediction from amplifying its error (model/diffusion.py: before issue 11 a
grid from t = 999 left sampled latents 6,000x too large); the clamp is a bound on whatever
amplification or strong guidance remains. The evaluation sets clip_x0 to the autoencoder's
own latent range (max |latent| over the encoded training images, harness `latent_range`),
which no real latent exceeds, so the clamp only removes what no image has.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from data.autoencoders import ImageAutoencoder
from model.batch import SpecialTokens, Text
from model.family import Family, ImageSampling


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@torch.no_grad()
def sample_images(model: nn.Module, family: Family, autoencoder: ImageAutoencoder, captions: list[torch.Tensor],
                  special: SpecialTokens, how: ImageSampling, generator: torch.Generator, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """One image per caption (token ids [n] each): uint8 [N, 3, H, W] on the CPU."""
    out = []
    for sl in _batches(len(captions), batch_size):
        latents = family.text_to_image(model, captions[sl], special, how, generator)
        out.append(autoencoder.decode(latents.to(autoencoder.device)).cpu())
        if progress is not None:
            progress(len(captions[sl]))
    return torch.cat(out)


@torch.no_grad()
def sample_captions(model: nn.Module, family: Family, images: torch.Tensor, special: SpecialTokens,
                    max_tokens: int, generator: torch.Generator, batch_size: int,
                    progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Greedy text after each encoded image (KL latents [N, C, h, w] for Transfusion, VQ codes
    [N, h, w] for Chameleon); token ids [n] per image."""
    out: list[torch.Tensor] = []
    for sl in _batches(images.shape[0], batch_size):
        out += family.caption(model, images[sl], special, max_tokens, generator)
        if progress is not None:
            progress(images[sl].shape[0])
    return out


@torch.no_grad()
def continue_text(model: nn.Module, family: Family, prompts: list[torch.Tensor], special: SpecialTokens,
                  max_tokens: int, batch_size: int) -> list[torch.Tensor]:
    """Greedy text-only continuation of each prompt (token ids [n], BOS added), no images;
    token ids [m] per prompt (the lm_eval adapter's generate_until)."""
    out: list[list] = []
    for sl in _batches(len(prompts), batch_size):
        out += family.continue_text(model, [[Text(p.long())] for p in prompts[sl]], special, max_tokens)
    return [torch.cat([s.ids for s in r if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)]) for r in out]
