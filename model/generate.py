"""Mixed-modal decoding with a Transfusion model (paper sec 3.3): the shared engine
(model/engine.py) with Transfusion's image hook.

In image mode n pure-noise patches are appended and denoised over K steps, each step
overwriting the patches in place against the cached prefix (only the image's patches are
computed); the clean image then joins the prefix at t = 0, as in captioning.

Classifier-free guidance mixes the noise predicted with the real prefix and with an
unconditional one, BOS BOI, i.e. the image at sequence start (paper sec 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from model.batch import Image, Segment, SpecialTokens
from model.diffusion import Diffusion, guided
from model.engine import DecodingContext, Engine, ImageHook, first_images, image_prompts, texts
from model.transfusion import Transfusion


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64  # sampled text tokens per row (BOI and EOS included)
    temperature: float = 0.0  # 0 = greedy
    top_k: int | None = None
    max_images: int = 1  # per row; past it BOI can no longer be sampled
    image_steps: int = 250  # paper sec 4.1
    sampler: str = "ddim"  # or "ddpm"
    eta: float = 0.0
    cfg_scale: float = 1.0  # paper: 5 for the Chameleon comparison, 3 for ablations
    clip_x0: float | None = None  # clamp each step's predicted clean latent to [-c, c] (evals: the latent range)
    spacing: str = "auto"  # timestep grid: auto = capped (t <= 954) for eps, trailing for v / x0 (model/diffusion.py)


class DiffusionImages(ImageHook):
    """Transfusion's images: latents [C, H, W], denoised in place by `diffusion`."""

    def __init__(self, model: Transfusion, diffusion: Diffusion, cfg: SamplingConfig) -> None:
        self.model, self.diffusion, self.cfg = model, diffusion, cfg
        p = model.cfg.patch
        self.elements_per_image, self.latent_shape = p.elements_per_image, (p.latent_channels, p.latent_size,
                                                                            p.latent_size)
        self.param = next(model.parameters())
        self.uncond = None  # the BOS BOI context for guidance, built on first use

    def embed(self, tokens: torch.Tensor, modality: torch.Tensor, images: list[torch.Tensor]) -> torch.Tensor:
        dev, dtype = self.param.device, self.param.dtype
        x0 = torch.stack(images).to(dev, dtype) if images else torch.zeros((0, *self.latent_shape), device=dev,
                                                                            dtype=dtype)
        x, _ = self.model.embed(tokens, modality, x0, torch.zeros(x0.shape[0], dtype=torch.long, device=dev))
        return x

    def _pass(self, ctx: DecodingContext, rows, start_pos, image_id: int, x_t, t, commit: bool) -> torch.Tensor:
        b, p = x_t.shape[0], self.elements_per_image
        pos = start_pos[:, None] + torch.arange(p, device=x_t.device)
        doc = torch.where(rows, 0, -1)[:, None].expand(b, p)
        img = torch.full((b, p), image_id, dtype=torch.long, device=x_t.device)
        tokens, skips = self.model.patch_enc(x_t, t)
        h = ctx.run(tokens, pos, doc, img, commit)
        return self.model.decode_images(h, t, skips)

    def image(self, engine: Engine, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance mixes the prediction with the real prefix and with an
        unconditional one, BOS BOI, i.e. the image at sequence start (paper sec 4.1)."""
        cfg, dev, b, image_id = self.cfg, self.param.device, rows.shape[0], engine.next_image_id

        def cond(x_t, t):
            return self._pass(engine.ctx, rows, engine.pos, image_id, x_t, t, commit=False)

        model_fn = cond
        if cfg.cfg_scale != 1.0:
            if self.uncond is None:
                self.uncond = DecodingContext(self.model, engine.use_cache)
                sp = engine.special
                ids = torch.tensor([[sp.bos, sp.boi]], device=dev).expand(b, 2)
                self.uncond.run(self.model.tok_emb(ids), torch.arange(2, device=dev).expand(b, 2),
                                torch.zeros_like(ids), torch.full_like(ids, -1), commit=True)
            two = torch.full((b,), 2, device=dev)

            def uncond(x_t, t):
                return self._pass(self.uncond, rows, two, image_id, x_t, t, commit=False)

            model_fn = guided(cond, uncond, cfg.cfg_scale)
        x_T = torch.randn((b, *self.latent_shape), generator=engine.generator, device=dev).to(self.param.dtype)
        x0 = self.diffusion.sample(model_fn, x_T, cfg.image_steps, method=cfg.sampler, eta=cfg.eta,
                                   generator=engine.generator, clip_x0=cfg.clip_x0, spacing=cfg.spacing)
        self._pass(engine.ctx, rows, engine.pos, image_id, x0, torch.zeros(b, dtype=torch.long, device=dev),
                   commit=True)
        engine.pos = engine.pos + rows.long() * self.elements_per_image
        return x0


def _engine(model: nn.Module, diffusion: Diffusion | None, special: SpecialTokens, cfg: SamplingConfig,
            generator: torch.Generator | None, use_cache: bool) -> Engine:
    return Engine(model, DiffusionImages(model, diffusion, cfg), special, generator, use_cache)


@torch.no_grad()
def generate(model: Transfusion, diffusion: Diffusion | None, prompts: list[list[Segment]], special: SpecialTokens,
             cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[Segment]]:
    """Continue each prompt; returns per prompt the generated segments: Text(ids [n]) and
    Image(latent [C, H, W]). Prompt images are given as clean latents. diffusion may be None
    when no image is generated (max_images=0, no prompt ending in BOI)."""
    return _engine(model, diffusion, special, cfg, generator, use_cache).generate(prompts, cfg)


def text_to_image(model: Transfusion, diffusion: Diffusion, captions: list[torch.Tensor], special: SpecialTokens,
                  cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """One image per caption (token ids [n]): the prompt is the caption then BOI.
    Returns latents [B, C, H, W]."""
    return first_images(generate(model, diffusion, image_prompts(captions, special), special,
                                 replace(cfg, max_new_tokens=0), generator, use_cache))


def caption(model: Transfusion, diffusion: Diffusion | None, latents: torch.Tensor, special: SpecialTokens,
            cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
            use_cache: bool = True) -> list[torch.Tensor]:
    """Text after each image latent [B, C, H, W] (greedy by default, paper sec 4.1), without
    generating further images. Returns token ids [n] per image."""
    return texts(generate(model, diffusion, [[Image(x)] for x in latents], special, replace(cfg, max_images=0),
                          generator, use_cache))
