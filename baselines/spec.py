"""The Chameleon-style baseline as a family (model/family.py's interface): images are VQ
code grids, learned and sampled as tokens of one joint vocabulary.

The recipe (Chameleon's stability recipe) is in baselines/recipe.py.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from baselines.chameleon import LOSS_WEIGHTS, Chameleon, ChameleonConfig, lm_targets, loss_terms, param_counts
from baselines.generate import ChameleonSamplingConfig, caption, generate, text_to_image
from baselines.recipe import OWN_KNOBS, RECIPE
from model.backbone import BackboneConfig
from model.batch import PackedBatch, Segment, SpecialTokens
from model.family import Family, ImageSampling, Terms


class ChameleonFamily(Family):
    name = "chameleon"
    image_kind = "vq"
    recipe, own_knobs = RECIPE, OWN_KNOBS  # baselines/recipe.py: torch-free, for the launcher
    held_out_terms = ("lm_image",)

    @classmethod
    def model_config(cls, backbone: BackboneConfig, vocab_size: int, image_shape: tuple[int, ...],
                     codebook_size: Callable[[], int | None], knobs: dict[str, Any]) -> ChameleonConfig:
        if len(image_shape) != 2 or image_shape[0] != image_shape[1]:
            raise ValueError(f"chameleon needs a square code grid shape (h, w), got {tuple(image_shape)}")
        codebook = codebook_size()
        if codebook is None:
            raise ValueError("chameleon needs the VQ codebook_size")
        cfg = ChameleonConfig(backbone=backbone, text_vocab_size=vocab_size, codebook_size=codebook,
                              code_grid=image_shape[0], z_loss=knobs["z_loss"])
        cfg.validate()
        return cfg

    @property
    def weights(self) -> dict[str, float]:
        return LOSS_WEIGHTS

    def build(self) -> nn.Module:
        return Chameleon(self.cfg)

    @property
    def elements_per_image(self) -> int:
        return self.cfg.elements_per_image

    def param_counts(self) -> dict[str, int]:
        return param_counts(self.cfg)

    def loss_terms(self, model: nn.Module, batch: PackedBatch, draws) -> Terms:
        return loss_terms(model, batch)

    def text_to_image(self, model: nn.Module, captions: list[torch.Tensor], special: SpecialTokens,
                      how: ImageSampling, generator: torch.Generator | None) -> torch.Tensor:
        cfg = ChameleonSamplingConfig(cfg_scale=how.cfg_scale, image_top_k=how.code_top_k,
                                      image_temperature=how.code_temperature)
        return text_to_image(model, captions, special, cfg, generator)

    def caption(self, model: nn.Module, images: torch.Tensor, special: SpecialTokens, max_tokens: int,
                generator: torch.Generator | None) -> list[torch.Tensor]:
        return caption(model, images, special, ChameleonSamplingConfig(max_new_tokens=max_tokens), generator)

    def continue_text(self, model: nn.Module, prompts: list[list[Segment]], special: SpecialTokens,
                      max_tokens: int) -> list[list[Segment]]:
        return generate(model, prompts, special, ChameleonSamplingConfig(max_new_tokens=max_tokens, max_images=0))

    def caption_logits(self, model: nn.Module, batch: PackedBatch, special: SpecialTokens
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask, targets = lm_targets(batch, model.tokens_of(batch))
        # Codes, BOI (after BOS) and EOI (after the last code) are image targets, not the caption.
        sel = mask & (targets < self.cfg.text_vocab_size) & (targets != special.boi) & (targets != special.eoi)
        return model(batch, sel), targets[sel], sel


__all__ = ["ChameleonFamily"]
