"""Transfusion: one transformer over text tokens and image latent patches (arXiv 2408.11039).

The network only predicts: `Transfusion.forward` takes a packed batch whose images are already
noised and returns next-token logits (at text positions that have a target) and the noise
prediction for every image (eps by default, or v / x0: model/diffusion.py). `loss_terms`
owns what goes around it: noising at per-image timesteps (drawn by `draw_noise`, with the
noise limit for image-first examples) and the loss terms of
    loss = L_LM + lambda * L_DDPM,  lambda = 5        (paper eq. 4, sec 4.1)
with L_LM the mean over text targets and L_DDPM the per-image mean squared error on the
prediction target (the noise, for the paper's eps), averaged over images. The terms come back
as sums with counts and `loss_weights` says how they combine: model/family.py composes the
means and the objective once, for one process or (grid/distributed.py) for many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from model.backbone import BackboneConfig
from model.batch import IMAGE, PackedBatch
from model.diffusion import Diffusion, DiffusionConfig
from model.family import Terms
from model.losses import next_token_sums
from model.masks import ATTENTION_BACKENDS, AttentionMask, attention_mask
from model.patches import PatchConfig, build_patch_codec
from model.rope import rope_angles
from model.token_model import TokenModel

IMAGE_ATTENTION = ("bidirectional", "causal")


@dataclass
class TransfusionConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vocab_size: int = 2048
    image_attention: str = "bidirectional"  # "causal" is the paper's Table 5 ablation
    lambda_diffusion: float = 5.0  # paper sec 4.1
    z_loss: float = 0.0
    attention: str = "auto"  # auto: FlexAttention block masks on CUDA, dense SDPA elsewhere

    def validate(self) -> None:
        self.backbone.validate()
        self.patch.validate()
        self.diffusion.validate()
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.image_attention not in IMAGE_ATTENTION:
            raise ValueError(f"image_attention={self.image_attention!r}: expected one of {IMAGE_ATTENTION}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention={self.attention!r}: expected one of {ATTENTION_BACKENDS}")


class Transfusion(TokenModel):
    """The shared token model (model/token_model.py: embedding, backbone, head, decode) plus
    the patch encoder and decoder."""

    def __init__(self, cfg: TransfusionConfig) -> None:
        cfg.validate()
        super().__init__(cfg.backbone, cfg.vocab_size)
        self.cfg = cfg
        self.patch_enc, self.patch_dec = build_patch_codec(cfg.patch, cfg.backbone.dim)
        self._init_token_weights()

    @property
    def bidirectional_images(self) -> bool:
        return self.cfg.image_attention == "bidirectional"

    def attention_mask(self, doc_id: torch.Tensor, image_id: torch.Tensor) -> AttentionMask:
        """The training/prefill mask for rows doc_id, image_id [B, L]."""
        return attention_mask(doc_id, image_id, self.bidirectional_images, self.cfg.attention)

    def embed(self, tokens: torch.Tensor, modality: torch.Tensor, x_t: torch.Tensor,
              t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Input vectors [B, L, dim]: token embeddings, with the encoded patches of images
        x_t [n, C, H, W] at timesteps t [n] written over the IMAGE elements in row-major
        order. Returns them and the patch encoder's skip activations (U-Net)."""
        x = self.tok_emb(tokens)
        patches, skips = self.patch_enc(x_t, t)
        is_image = modality == IMAGE
        # The check reads a count back to the host: on CPU it is free, on CUDA it would stall
        # every step, so it runs on CPU only (the trainer checks the host batch's own
        # consistency, PackedBatch.check, on every device).
        if not x.is_cuda and patches.shape[0] * patches.shape[1] != int(is_image.sum()):
            raise ValueError(f"{int(is_image.sum())} image elements in the batch but {patches.shape[0]} images x "
                             f"{patches.shape[1]} patches: the packing's patch size does not match the model's")
        x = x.masked_scatter(is_image[..., None], patches.to(x.dtype))
        return x, skips

    def decode_images(self, h_img: torch.Tensor, t: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Diffusion prediction [n, C, H, W] (eps, v or x0) from the backbone's outputs at the
        patches [n, P, dim]."""
        return self.patch_dec(h_img, t, skips)

    def forward(self, batch: PackedBatch, x_t: torch.Tensor, t: torch.Tensor,
                lm_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over a packed batch whose images are noised: x_t [n, C, H, W], t [n].

        Returns (logits [m, V] at the m positions where lm_mask [B, L] is True (default: every
        position with a text target), the diffusion prediction [n, C, H, W] (cfg.diffusion.prediction)). The head runs only where a loss
        or a prediction is wanted, not at every patch.
        """
        x, skips = self.embed(batch.tokens, batch.modality, x_t, t)
        cos, sin = rope_angles(batch.position, self.cfg.backbone.head_dim, self.cfg.backbone.rope_theta)
        h = self.backbone(x, cos, sin, self.attention_mask(batch.doc_id, batch.image_id))
        if lm_mask is None:
            lm_mask = batch.lm_targets()[0]
        logits = self.head(h[lm_mask])
        n = x_t.shape[0]
        eps = self.decode_images(h[batch.modality == IMAGE].view(n, self.cfg.patch.elements_per_image, h.shape[-1]), t, skips)
        return logits, eps


def draw_noise(diffusion: Diffusion, x0: torch.Tensor, image_first: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps [n] and Gaussian noise shaped like the latents x0 [n, C, H, W], in that order
    from `generator` (drawn on its device, then moved: a CPU generator can seed a CUDA run)."""
    t = diffusion.sample_timesteps(x0.shape[0], image_first, generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device) \
        if generator is not None else torch.randn_like(x0)
    return t, noise


def loss_weights(cfg: TransfusionConfig) -> dict[str, float]:
    """The objective's weight per loss term (paper eq. 4): lm + lambda * diffusion + z."""
    return {"lm": 1.0, "diffusion": cfg.lambda_diffusion, "z": 1.0}


def loss_terms(model: nn.Module, diffusion: Diffusion, batch: PackedBatch, t: torch.Tensor,
               noise: torch.Tensor) -> Terms:
    """Noise every image at its timestep, run one pass: {"lm", "diffusion", "z"} as (sum, count).

    `model` may be a Transfusion or a DDP/FSDP wrapper of one (its forward is what is called).
    Noise is added to the whole latent before patchifying (paper sec 3.2); t [n] and noise
    [n, C, H, W] come from `draw_noise` (for a larger batch this one may be a shard of).
    """
    cfg: TransfusionConfig = getattr(model, "module", model).cfg
    x0 = batch.images.float()
    n = x0.shape[0]
    if n == 0:  # a text-only batch carries no image shape
        p = cfg.patch
        x0 = x0.new_zeros(0, p.latent_channels, p.latent_size, p.latent_size)
        t, noise = torch.zeros(0, dtype=torch.long, device=x0.device), x0
    x_t = diffusion.q_sample(x0, t, noise)
    lm_mask, targets = batch.lm_targets()
    logits, pred = model(batch, x_t, t, lm_mask)
    n_text = int(lm_mask.sum())
    lm, z = next_token_sums(logits, targets[lm_mask], cfg.z_loss)
    diff = diffusion.loss_sum(pred.float(), diffusion.target(x0, noise, t))
    return {"lm": (lm, n_text), "diffusion": (diff, n), "z": (z, n_text)}
