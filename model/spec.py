"""Transfusion as a family (model/family.py's interface): images are KL latents cut into
patches and learned by diffusion; sampled by diffusion with guidance on the prediction.

The recipe (the paper's, sec 4.1) and the knobs it owns are in model/recipe.py.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from model.accounting import param_counts
from model.backbone import BackboneConfig
from model.batch import PackedBatch, Segment, SpecialTokens
from model.diffusion import Diffusion, DiffusionConfig
from model.family import Family, ImageSampling, Terms
from model.generate import SamplingConfig, caption, generate, text_to_image
from model.patches import PatchConfig
from model.recipe import OWN_KNOBS, RECIPE
from model.transfusion import Transfusion, TransfusionConfig, draw_noise, loss_terms, loss_weights


def _config(knobs: dict[str, Any], backbone: BackboneConfig, vocab_size: int, channels: int,
            size: int) -> TransfusionConfig:
    return TransfusionConfig(
        backbone=backbone,
        patch=PatchConfig(kind=knobs["patch_kind"], patch_size=knobs["patch_size"], latent_channels=channels,
                          latent_size=size, unet_channels=knobs["unet_channels"]),
        diffusion=DiffusionConfig(noise_limit=knobs["noise_limit"], prediction=knobs["prediction"]),
        vocab_size=vocab_size, image_attention=knobs["image_attention"],
        lambda_diffusion=knobs["lambda_diffusion"], z_loss=knobs["z_loss"] or 0.0)


class TransfusionFamily(Family):
    name = "transfusion"
    image_kind = "kl"
    recipe, own_knobs = RECIPE, OWN_KNOBS  # model/recipe.py: torch-free, for the launcher
    held_out_terms = ("diffusion", "lm")

    def __init__(self, cfg: TransfusionConfig) -> None:
        super().__init__(cfg)
        self.diffusion = Diffusion(cfg.diffusion)

    @classmethod
    def model_config(cls, backbone: BackboneConfig, vocab_size: int, image_shape: tuple[int, ...],
                     codebook_size: Callable[[], int | None], knobs: dict[str, Any]) -> TransfusionConfig:
        if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
            raise ValueError(f"transfusion needs a square latent shape (C, H, W), got {tuple(image_shape)}")
        cfg = _config(knobs, backbone, vocab_size, image_shape[0], image_shape[1])
        cfg.validate()
        return cfg

    @classmethod
    def validate_knobs(cls, knobs: dict[str, Any]) -> None:
        # The default latent shape: divisibility by the patch size is checked again with the data's.
        p = PatchConfig()
        _config(knobs, BackboneConfig(), 1, p.latent_channels, p.latent_size).validate()

    @property
    def weights(self) -> dict[str, float]:
        return loss_weights(self.cfg)

    def build(self) -> nn.Module:
        return Transfusion(self.cfg)

    @property
    def elements_per_image(self) -> int:
        return self.cfg.patch.elements_per_image

    def param_counts(self) -> dict[str, int]:
        return param_counts(self.cfg)

    def draw(self, batch: PackedBatch, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not batch.images.shape[0]:
            return None
        return draw_noise(self.diffusion, batch.images.float(), batch.image_first, generator)

    def shard_draws(self, draws, images: slice):
        return None if draws is None else (draws[0][images], draws[1][images])

    def loss_terms(self, model: nn.Module, batch: PackedBatch, draws) -> Terms:
        t, noise = draws if draws is not None else (None, None)
        return loss_terms(model, self.diffusion, batch, t, noise)

    def text_to_image(self, model: nn.Module, captions: list[torch.Tensor], special: SpecialTokens,
                      how: ImageSampling, generator: torch.Generator | None) -> torch.Tensor:
        cfg = SamplingConfig(image_steps=how.steps, sampler=how.sampler, cfg_scale=how.cfg_scale, clip_x0=how.clip_x0)
        return text_to_image(model, self.diffusion, captions, special, cfg, generator)

    def caption(self, model: nn.Module, images: torch.Tensor, special: SpecialTokens, max_tokens: int,
                generator: torch.Generator | None) -> list[torch.Tensor]:
        return caption(model, self.diffusion, images, special, SamplingConfig(max_new_tokens=max_tokens), generator)

    def continue_text(self, model: nn.Module, prompts: list[list[Segment]], special: SpecialTokens,
                      max_tokens: int) -> list[list[Segment]]:
        return generate(model, self.diffusion, prompts, special, SamplingConfig(max_new_tokens=max_tokens, max_images=0))

    def caption_logits(self, model: nn.Module, batch: PackedBatch, special: SpecialTokens
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask, targets = batch.lm_targets()
        sel = mask & (targets != special.boi)  # BOS -> BOI is a layout target, not the caption
        x0 = batch.images.float()
        if x0.shape[0] == 0:  # text-only rows carry no image shape
            p = self.cfg.patch
            x0 = x0.new_zeros(0, p.latent_channels, p.latent_size, p.latent_size)
        logits, _ = model(batch, x0, torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device), sel)
        return logits, targets[sel], sel
