"""The Chameleon-style baseline: images as discrete VQ codes in one shared vocabulary.

Transfusion's controlled comparison (arXiv 2408.11039, sec 4.1; ../shared/paper-notes.md,
"Chameleon-style baseline"): the same backbone, data and token budget, but each image is a
VQ-VAE code grid [h, w] whose codes are ordinary vocabulary entries, one element per code
in raster order between BOI and EOI, and everything is trained by next-token prediction under
a causal mask. Chameleon's stability recipe (arXiv 2405.09818, sec 2.3) is on by default:
QK-norm, z-loss 1e-5 * log^2 Z and learning rate 1e-4 (baselines/spec.py's recipe); norm reordering and dropout are backbone
switches.

One vocabulary of text_vocab_size + codebook_size ids:
    [0, text_vocab_size)                                text, the specials BOS/EOS/BOI/EOI/PAD among them
    [text_vocab_size, text_vocab_size + codebook_size)  image code c is id text_vocab_size + c

Element accounting (model/accounting.py): D counts every code, so a Chameleon image costs
h * w elements (64 for the suite's 8x8 VQ grid against Transfusion's 16 patches); N has no
patch layers, and the embedding and head span the joint vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.accounting import count_params, element_flops
from model.backbone import BackboneConfig
from model.batch import IMAGE, PAD, PackedBatch
from model.family import Terms
from model.losses import next_token_sums
from model.masks import ATTENTION_BACKENDS, AttentionMask, attention_mask
from model.rope import rope_angles
from model.token_model import TokenModel


@dataclass
class ChameleonConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(qk_norm=True))
    text_vocab_size: int = 2048
    codebook_size: int = 512  # data/autoencoders.py AutoencoderConfig's toy VQ (paper: 16,384)
    code_grid: int = 8  # codes per image side: the VQ latent is code_grid x code_grid
    z_loss: float = 1e-5  # Chameleon sec 2.3
    attention: str = "auto"  # as TransfusionConfig: flex block masks on CUDA, dense SDPA elsewhere

    @property
    def vocab_size(self) -> int:
        """The joint vocabulary (also what model.accounting.param_counts reads)."""
        return self.text_vocab_size + self.codebook_size

    @property
    def elements_per_image(self) -> int:
        """Elements per image: the Packer's elements_per_image for this family."""
        return self.code_grid * self.code_grid

    def validate(self) -> None:
        self.backbone.validate()
        for name in ("text_vocab_size", "codebook_size", "code_grid"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.z_loss < 0:
            raise ValueError(f"need z_loss >= 0, got z_loss={self.z_loss}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention={self.attention!r}: expected one of {ATTENTION_BACKENDS}")

    def code_to_token(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes (any shape, in [0, codebook_size)) -> joint-vocabulary ids, same shape."""
        return codes.long() + self.text_vocab_size

    def token_to_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Joint-vocabulary ids of image codes (any shape) -> codes, same shape; ValueError if
        any id is text (reads a value back to the host: not for a CUDA training step)."""
        codes = ids.long() - self.text_vocab_size
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"ids outside the code range [{self.text_vocab_size}, {self.vocab_size})")
        return codes


def param_counts(cfg: ChameleonConfig) -> dict[str, int]:
    """{n_nonembedding, n_with_embeddings, n_with_patch} (no patch layers, so the last two agree)."""
    return count_params(cfg.backbone, cfg.vocab_size, patch_params=0)


def flops_per_element(cfg: ChameleonConfig, seq_len: int, attention_context: float | None = None) -> dict[str, float]:
    """{six_n, six_n_total, with_attention} per element (model.accounting.element_flops). The
    head term is exact here, not an upper bound: every Chameleon element, code or text, has a
    next-token target and runs the head."""
    return element_flops(cfg.backbone, cfg.vocab_size, seq_len, attention_context)


def joint_tokens(tokens: torch.Tensor, modality: torch.Tensor, codes: torch.Tensor, text_vocab_size: int) -> torch.Tensor:
    """tokens, modality [B, L]; codes [n, h, w] -> ids [B, L] with text_vocab_size + code at the
    IMAGE elements: image after image in row-major order of appearance, each in raster order
    (the PackedBatch contract), so one masked_scatter places them all."""
    is_image = modality == IMAGE
    flat = codes.long().reshape(-1)  # a text-only batch may carry images as torch.zeros(0)
    # The host check is free on CPU; on CUDA it would stall each step, so it runs on CPU only
    # (the trainer checks the host batch's own consistency, PackedBatch.check, on every device).
    if not tokens.is_cuda and flat.numel() != int(is_image.sum()):
        raise ValueError(f"{int(is_image.sum())} image elements in the batch but the code grids hold "
                         f"{flat.numel()} codes: pack with elements_per_image = code_grid ** 2")
    return tokens.masked_scatter(is_image, flat + text_vocab_size)


def tokens_of(batch: PackedBatch, cfg: ChameleonConfig) -> torch.Tensor:
    """The batch as joint-vocabulary ids [B, L]; batch.images are code grids [n, h, w]."""
    n = batch.images.shape[0]
    if n and tuple(batch.images.shape[1:]) != (cfg.code_grid, cfg.code_grid):
        raise ValueError(f"images have shape {tuple(batch.images.shape)}, expected code grids "
                         f"[n, {cfg.code_grid}, {cfg.code_grid}]")
    return joint_tokens(batch.tokens, batch.modality, batch.images, cfg.text_vocab_size)


def lm_targets(batch: PackedBatch, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, L] bool, targets [B, L] long): position i predicts tokens[i+1] when both are
    non-padding elements of the same document. Unlike Transfusion every element is a target,
    so BOI predicts the first code and the last code predicts EOI."""
    real = batch.modality != PAD
    mask = torch.zeros_like(real)
    mask[:, :-1] = real[:, :-1] & real[:, 1:] & (batch.doc_id[:, :-1] == batch.doc_id[:, 1:])
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:]
    return mask, targets


class Chameleon(TokenModel):
    """The shared token model (model/token_model.py) over the joint vocabulary, causal
    everywhere (bidirectional_images False)."""

    def __init__(self, cfg: ChameleonConfig) -> None:
        cfg.validate()
        super().__init__(cfg.backbone, cfg.vocab_size)
        self.cfg = cfg
        self._init_token_weights()

    def attention_mask(self, doc_id: torch.Tensor, image_id: torch.Tensor) -> AttentionMask:
        """Causal, documents apart, for rows doc_id, image_id [B, L]."""
        return attention_mask(doc_id, image_id, False, self.cfg.attention)

    def tokens_of(self, batch: PackedBatch) -> torch.Tensor:
        """Joint-vocabulary ids [B, L] of a batch whose images are code grids [n, h, w]."""
        return tokens_of(batch, self.cfg)

    def forward(self, batch: PackedBatch, lm_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [m, V] at the m positions where lm_mask [B, L] is True (default: every
        position with a next-token target, see lm_targets), V = text + codebook."""
        tokens = self.tokens_of(batch)
        b = self.cfg.backbone
        cos, sin = rope_angles(batch.position, b.head_dim, b.rope_theta)
        h = self.backbone(self.tok_emb(tokens), cos, sin, self.attention_mask(batch.doc_id, batch.image_id))
        if lm_mask is None:
            lm_mask = lm_targets(batch, tokens)[0]
        return self.head(h[lm_mask])


LOSS_WEIGHTS = {"lm": 1.0, "z": 1.0}  # the objective: lm + z; lm_text and lm_image are reported only


def loss_terms(model: nn.Module, batch: PackedBatch) -> Terms:
    """Next-token cross-entropy over every target plus the z-loss, as (sum, count) terms:
    "lm" and "z" over all targets, and for the text-only cost (detached, reported only)
    "lm_text" / "lm_image" over targets that are text ids (EOI after an image included) /
    image codes. `model` may be a Chameleon or a DDP/FSDP wrapper of one."""
    cfg: ChameleonConfig = getattr(model, "module", model).cfg
    mask, targets = lm_targets(batch, tokens_of(batch, cfg))
    logits = model(batch, mask)
    targets = targets[mask]
    lm, z = next_token_sums(logits, targets, cfg.z_loss)
    with torch.no_grad():  # the split is for reporting; the gradient comes from lm
        per = F.cross_entropy(logits.float(), targets, reduction="none")
        is_text = targets < cfg.text_vocab_size
        n_text = int(is_text.sum())
        lm_text, lm_image = per[is_text].sum(), per[~is_text].sum()
    n = targets.numel()
    return {"lm": (lm, n), "z": (z, n), "lm_text": (lm_text, n_text), "lm_image": (lm_image, n - n_text)}
