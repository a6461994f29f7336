"""Mixed-modal decoding with the Chameleon-style baseline: the shared engine (model/engine.py)
with Chameleon's image hook.

Every element is a token. In image mode a row samples exactly h*w codes, one per step with
logits restricted to the code range, each fed back before the next; then the engine forces EOI
and the row returns to text mode. Text mode never samples a code.

Classifier-free guidance acts on the code logits, logits_u + scale * (logits_c - logits_u)
(Chameleon, arXiv 2405.09818, sec 2.4; Transfusion sec 4.1 for the comparison). The
unconditional context is BOS BOI in its own DecodingContext, advanced with the codes the
guided logits chose. It is one context for all rows: each new image is its own document there
(doc id = the row's image count, positions from 0), so the codes of a row's earlier images
are masked out as another document would be.

Images come back as code grids [h, w] long; pixels are the VQ autoencoder's job
(data/autoencoders.py ImageAutoencoder.decode, called by the evaluations; baselines/ imports
only model/).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from baselines.chameleon import Chameleon, joint_tokens
from model.batch import Image, Segment, SpecialTokens
from model.engine import DecodingContext, Engine, ImageHook, first_images, image_prompts, sample_token, texts


@dataclass
class ChameleonSamplingConfig:
    max_new_tokens: int = 64  # sampled text tokens per row (BOI and EOS included, codes not)
    temperature: float = 0.0  # text; 0 = greedy (captioning, paper sec 4.1)
    top_k: int | None = None
    max_images: int = 1  # per row; past it BOI can no longer be sampled
    # Codes are sampled apart from text: greedy code decoding collapses into repeated codes.
    image_temperature: float = 1.0
    image_top_k: int | None = None
    cfg_scale: float = 1.0  # guidance on code logits; 1 = off


class CodeImages(ImageHook):
    """Chameleon's images: VQ code grids [h, w], sampled code by code."""

    def __init__(self, model: Chameleon, cfg: ChameleonSamplingConfig) -> None:
        self.model, self.cfg = model, cfg
        self.text_vocab, self.grid = model.cfg.text_vocab_size, model.cfg.code_grid
        self.elements_per_image = self.grid * self.grid
        self.uncond = None  # the unconditional context for guidance, built on first use

    def embed(self, tokens: torch.Tensor, modality: torch.Tensor, images: list[torch.Tensor]) -> torch.Tensor:
        g = self.grid
        codes = torch.stack(images) if images else torch.zeros(0, g, g, dtype=torch.long)
        return self.model.tok_emb(joint_tokens(tokens, modality, codes.to(tokens.device), self.text_vocab))

    def _code(self, logits: torch.Tensor, u_logits: torch.Tensor | None, generator) -> torch.Tensor:
        """Codes [B] in [0, codebook) from the conditional logits [B, V], guided if asked."""
        if u_logits is not None:
            logits = u_logits + self.cfg.cfg_scale * (logits - u_logits)
        code_logits = logits[:, self.text_vocab:self.text_vocab + self.model.cfg.codebook_size]
        return sample_token(code_logits, self.cfg.image_temperature, self.cfg.image_top_k, generator)

    def image(self, engine: Engine, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sp, hw = engine.special, self.elements_per_image
        u_logits = None
        if self.cfg.cfg_scale != 1.0:
            if self.uncond is None:
                self.uncond = DecodingContext(self.model, engine.use_cache)
            # Each image is its own document in the unconditional context: doc = the row's
            # image count, so earlier images' codes are masked out there.
            doc = torch.where(rows, engine.n_images + 1, -1)
            ids = torch.stack([torch.where(rows, sp.bos, sp.pad), torch.where(rows, sp.boi, sp.pad)], 1)
            pos = torch.arange(2, device=ids.device).expand_as(ids)
            h = self.uncond.run(self.model.tok_emb(ids), pos, doc[:, None].expand_as(ids), torch.full_like(ids, -1),
                                commit=True)
            u_logits, u_pos = self.model.head(h[:, -1]), torch.full_like(doc, 2)
        codes = []
        for k in range(hw):
            code = self._code(logits, u_logits, engine.generator)
            codes.append(code)
            feed = torch.where(rows, self.text_vocab + code, -1)
            logits = engine.step(feed, rows)  # the code joins the row's context
            if u_logits is not None and k < hw - 1:
                u_logits = self.uncond.feed(feed, rows, u_pos, doc)
                u_pos = u_pos + 1
        return torch.stack(codes, 1).view(-1, self.grid, self.grid)


def _engine(model: Chameleon, special: SpecialTokens, cfg: ChameleonSamplingConfig,
            generator: torch.Generator | None, use_cache: bool) -> Engine:
    return Engine(model, CodeImages(model, cfg), special, generator, use_cache)


@torch.no_grad()
def generate(model: Chameleon, prompts: list[list[Segment]], special: SpecialTokens,
             cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[Segment]]:
    """Continue each prompt; returns per prompt the generated segments: Text(ids [n]) and
    Image(codes [h, w] long in [0, codebook)). Prompt images are code grids [h, w]."""
    return _engine(model, special, cfg, generator, use_cache).generate(prompts, cfg)


def text_to_image(model: Chameleon, captions: list[torch.Tensor], special: SpecialTokens,
                  cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """One image per caption (token ids [n]): the prompt is the caption then BOI.
    Returns code grids [B, h, w] long, ready for the VQ autoencoder's decode."""
    return first_images(generate(model, image_prompts(captions, special), special, replace(cfg, max_new_tokens=0),
                                 generator, use_cache))


def caption(model: Chameleon, codes: torch.Tensor, special: SpecialTokens,
            cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
            use_cache: bool = True) -> list[torch.Tensor]:
    """Text after each image, codes [B, h, w] (greedy by default), without generating further
    images. Returns token ids [n] per image."""
    return texts(generate(model, [[Image(c.long().cpu())] for c in codes], special, replace(cfg, max_images=0),
                          generator, use_cache))
