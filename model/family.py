"""What a model family is to the trainer, the evaluation and the accounting (after
torchtitan's ModelSpec): one interface, one implementation per family.

    family = TransfusionFamily(model_cfg)     # model/spec.py; baselines/spec.py: ChameleonFamily
    model = family.build()
    terms = family.loss_terms(model, batch, family.draw(batch, generator))
    objective, logged = combine(terms, family.weights)   # logged: each term's mean and "loss"

Nothing outside model/spec.py and baselines/spec.py branches on the family: the trainer asks
the family for its model, its elements per image, its loss terms and its optimizer recipe; the
evaluation asks it for images, captions and text; the accounting for its parameter counts.

A loss term is a (sum, count) pair, not a mean, so that means over a batch split across ranks,
and the objective built from them, are composed in one place (`combine`): the mean of a term
is sum / count over the whole global batch, and the objective is sum_k weight_k * mean_k.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from model.batch import PackedBatch, Segment, SpecialTokens
from model.recipe import Recipe

# name -> (sum over the term's items, with grad; number of items)
Terms = dict[str, tuple[torch.Tensor, int]]


@dataclass
class ImageSampling:
    """How images are sampled: guidance for both families, sampler and steps for diffusion,
    code temperature for Chameleon (baselines/generate.py: greedy codes collapse)."""

    cfg_scale: float = 5.0  # paper: 5 for the family comparison, 3 for ablations
    sampler: str = "ddim"  # "ddim" | "ddpm"
    steps: int = 25  # diffusion steps (paper: 250)
    code_temperature: float = 1.0
    code_top_k: int | None = None
    clip_x0: float | None = None  # clamp x0_hat to [-c, c] at every diffusion step (evals/sampling.py)


def combine(terms: Terms, weights: dict[str, float], all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
            world: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """(objective to backpropagate, {term: mean} plus "loss", the objective's value).

    The mean of a term is its sum over its count, both summed over the ranks by `all_sum`
    (None: one process; a term with no items has mean 0), and the objective is
    sum_k weight_k * mean_k. Each rank backpropagates its own sums over the global counts,
    times `world` because DDP and FSDP average gradients over ranks: the gradient is then that
    of the global objective, whatever the world size. Terms without a weight are reported only.
    """
    names = list(terms)
    sums = torch.stack([terms[k][0].detach().float() for k in names])
    counts = torch.tensor([float(terms[k][1]) for k in names], device=sums.device)
    total = torch.cat([sums, counts])
    if all_sum is not None:
        total = all_sum(total)
    g_sums, g_counts = total[:len(names)], total[len(names):].clamp(min=1.0)
    at = {k: i for i, k in enumerate(names)}
    objective = sum(w * (terms[k][0] * world / g_counts[at[k]]) for k, w in weights.items())
    logged = {k: float(g_sums[i] / g_counts[i]) for i, k in enumerate(names)}
    logged["loss"] = sum(w * logged[k] for k, w in weights.items())
    return objective, logged


class Family(ABC):
    """One model family, bound to its model config (the attributes below are the same for
    every config of the family)."""

    name: ClassVar[str]
    image_kind: ClassVar[str]  # the autoencoder its images go through: "kl" latents or "vq" codes
    recipe: ClassVar[Recipe]
    own_knobs: ClassVar[tuple[str, ...]]  # run-config model knobs only this family reads
    held_out_terms: ClassVar[tuple[str, ...]]  # the terms reported on held-out images
    # The noise schedule of a family that learns images by diffusion (its denoiser is then
    # model(batch, x_t, t, lm_mask)[1], evals/conditioning.py's eps diagnostics); else None.
    diffusion: Any = None

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    @abstractmethod
    def model_config(cls, backbone, vocab_size: int, image_shape: tuple[int, ...],
                     codebook_size: Callable[[], int | None], knobs: dict[str, Any]) -> Any:
        """The family's model config from a backbone, the data (text vocabulary, encoded image
        shape: latent (C, H, W) or code grid (h, w); codebook_size() for a family with discrete
        codes, which loads the VQ autoencoder) and the run's resolved model knobs (a dict of
        grid/config.py ModelKnobs fields); validated (ValueError, one line)."""

    @classmethod
    def validate_knobs(cls, knobs: dict[str, Any]) -> None:
        """ValueError (one line) for knobs this family cannot build, before the data's shapes
        are known; nothing to check by default."""

    @property
    @abstractmethod
    def weights(self) -> dict[str, float]:
        """The objective: sum of weight * mean over these terms (others are reported only)."""

    @abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised model (the caller seeds torch first)."""

    @property
    @abstractmethod
    def elements_per_image(self) -> int:
        """Sequence elements one image occupies: patches (Transfusion) or codes (Chameleon)."""

    @abstractmethod
    def param_counts(self) -> dict[str, int]:
        """{n_nonembedding, n_with_embeddings, n_with_patch} (model/accounting.py)."""

    def draw(self, batch: PackedBatch, generator: torch.Generator | None) -> Any:
        """Random draws for the loss on the whole global batch (drawn on every rank, so each
        image gets the same draw whatever the world size); None when the loss needs none."""
        return None

    def shard_draws(self, draws: Any, images: slice) -> Any:
        """The draws for one rank's images."""
        return draws

    @abstractmethod
    def loss_terms(self, model: nn.Module, batch: PackedBatch, draws: Any) -> Terms:
        """(sum, count) per loss term for batch; model may be a DDP/FSDP wrapper."""

    @abstractmethod
    def text_to_image(self, model: nn.Module, captions: list[torch.Tensor], special: SpecialTokens,
                      how: ImageSampling, generator: torch.Generator | None) -> torch.Tensor:
        """One image per caption (token ids [n] each), as the family's autoencoder input:
        latents [B, C, H, W] or code grids [B, h, w]."""

    @abstractmethod
    def caption(self, model: nn.Module, images: torch.Tensor, special: SpecialTokens, max_tokens: int,
                generator: torch.Generator | None) -> list[torch.Tensor]:
        """Greedy text after each encoded image; token ids [n] per image."""

    @abstractmethod
    def continue_text(self, model: nn.Module, prompts: list[list[Segment]], special: SpecialTokens,
                      max_tokens: int) -> list[list[Segment]]:
        """Greedy text-only continuations (no images) of each prompt."""

    @abstractmethod
    def caption_logits(self, model: nn.Module, batch: PackedBatch, special: SpecialTokens
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [m, V], targets [m], selected [B, L] bool) at the m positions whose target is
        a caption token or EOS, not an image element or a layout marker (evals/conditioning.py)."""
