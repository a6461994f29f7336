"""Mixed-modal decoding with the Chameleon-style baseline, apart from the model.

Every element is a token, so rows advance one element per step in lockstep (model/generate.py's
DecodingContext, with the KV cache). Text mode samples from the text ids; when a row emits BOI
it samples exactly h*w codes with logits restricted to the code range, then EOI is forced and
the row returns to text mode. Prompts may hold text, code grids (captioning) or both; a prompt
ending in BOI asks for an image at once.

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
from model.batch import PAD, Image, Segment, SpecialTokens, Text, layout
from model.generate import DecodingContext, feed_tokens, sample_token


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


class _Decoder:
    """State of one batched generation call: the conditional context and, with guidance, the
    unconditional one."""

    def __init__(self, model: Chameleon, special: SpecialTokens, cfg: ChameleonSamplingConfig, use_cache: bool) -> None:
        self.model, self.special, self.cfg, self.use_cache = model, special, cfg, use_cache
        self.tv, self.grid = model.cfg.text_vocab_size, model.cfg.code_grid
        self.dev = next(model.parameters()).device
        self.ctx = DecodingContext(model, use_cache)
        self.uncond = DecodingContext(model, use_cache) if cfg.cfg_scale != 1.0 else None
        self.u_logits = None  # [B, V] unconditional logits for the next code

    def prefill(self, prompts: list[list[Segment]]) -> torch.Tensor:
        """Left-pad the prompts into one block, run it, return the last position's logits [B, V]."""
        sp, g = self.special, self.grid
        lays = [layout(p, sp, g * g, add_bos=True, add_eos=False) for p in prompts]
        length = max(lay.tokens.shape[0] for lay in lays)
        b = len(lays)
        tokens = torch.full((b, length), sp.pad, dtype=torch.long)
        modality = torch.full((b, length), PAD, dtype=torch.long)
        for r, lay in enumerate(lays):  # per prompt, not per element
            n = lay.tokens.shape[0]
            tokens[r, length - n:], modality[r, length - n:] = lay.tokens, lay.modality
        codes = [c for lay in lays for c in lay.images]  # row-major order of appearance
        codes = torch.stack(codes) if codes else torch.zeros(0, g, g, dtype=torch.long)
        tokens = joint_tokens(tokens, modality, codes, self.tv).to(self.dev)
        n_real = torch.tensor([lay.tokens.shape[0] for lay in lays], device=self.dev)
        valid = torch.arange(length, device=self.dev) >= length - n_real[:, None]
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        # Image ids only matter to bidirectional attention; Chameleon is causal, so all are -1.
        h = self.ctx.run(self.model.tok_emb(tokens), pos, torch.where(valid, 0, -1),
                         torch.full_like(tokens, -1), commit=True)
        self.pos = n_real  # next RoPE position per row
        self.u_pos = torch.zeros_like(n_real)  # the same in the unconditional context
        self.last = tokens[:, -1]
        return self.model.head(h[:, -1])

    def step(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (only `rows` [B] bool are real); return next logits [B, V]."""
        logits, self.pos = feed_tokens(self.model, self.ctx, tokens, rows, self.pos)
        return logits

    def advance_uncond(self, start: torch.Tensor, cont: torch.Tensor, codes: torch.Tensor,
                       image_no: torch.Tensor) -> None:
        """Rows `start` [B] bool begin an image: feed BOS BOI as document image_no [B]; rows
        `cont` feed their last code, codes [B] (joint ids). Sets u_logits [B, V]."""
        if self.uncond is None:
            return
        sp = self.special
        doc = torch.where(start | cont, image_no, -1)
        if start.any():  # two slots: [BOS, BOI] for starting rows, [unused, code] for the others
            ids = torch.stack([torch.where(start, sp.bos, sp.pad), torch.where(start, sp.boi, codes)], 1)
            docs = torch.stack([torch.where(start, doc, -1), doc], 1)
            pos = torch.stack([torch.zeros_like(self.u_pos), torch.where(start, 1, self.u_pos)], 1)
        else:
            ids, docs, pos = codes[:, None], doc[:, None], self.u_pos[:, None]
        h = self.uncond.run(self.model.tok_emb(ids.clamp(min=0)), pos, docs, torch.full_like(docs, -1), commit=True)
        self.u_pos = torch.where(start, 2, self.u_pos + cont.long())
        self.u_logits = self.model.head(h[:, -1])

    def sample_code(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Codes [B] in [0, codebook) from the conditional logits [B, V], guided if asked."""
        if self.uncond is not None:
            logits = self.u_logits + self.cfg.cfg_scale * (logits - self.u_logits)
        code_logits = logits[:, self.tv:self.tv + self.model.cfg.codebook_size]
        return sample_token(code_logits, self.cfg.image_temperature, self.cfg.image_top_k, generator)


def _segments(sampled: list[torch.Tensor], row: int, special: SpecialTokens, tv: int, grid: int) -> list[Segment]:
    """Rebuild one row's continuation from the per-step sampled ids (-1 = none): text runs as
    Text(ids [n]) and each image's codes as Image(codes [h, w])."""
    out: list[Segment] = []
    text: list[int] = []
    codes: list[int] = []
    for tok in (int(t[row]) for t in sampled):  # one row, at the end
        if tok >= tv:
            codes.append(tok - tv)
            if len(codes) == grid * grid:
                out.append(Image(torch.tensor(codes).view(grid, grid)))
                codes = []
        elif tok == special.boi:
            if text:
                out.append(Text(torch.tensor(text)))
                text = []
        elif tok >= 0 and tok != special.eos:
            text.append(tok)
    if text:
        out.append(Text(torch.tensor(text)))
    return out


@torch.no_grad()
def generate(model: Chameleon, prompts: list[list[Segment]], special: SpecialTokens,
             cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[Segment]]:
    """Continue each prompt; returns per prompt the generated segments: Text(ids [n]) and
    Image(codes [h, w] long in [0, codebook)). Prompt images are code grids [h, w]."""
    dec = _Decoder(model, special, cfg, use_cache)
    tv, hw = dec.tv, dec.grid * dec.grid
    logits = dec.prefill(prompts)
    b, dev = len(prompts), logits.device
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    n_sampled = torch.zeros(b, dtype=torch.long, device=dev)
    starting = dec.last == special.boi  # prompts ending in BOI: that BOI is this call's image
    n_images = starting.long()
    codes_left = torch.where(starting, hw, 0)  # > 0: the row is inside an image
    eoi_next = torch.zeros_like(done)
    sampled: list[torch.Tensor] = []  # per step: the id each row drew, -1 for none
    if starting.any():
        sampled.append(torch.where(starting, special.boi, -1))
        dec.advance_uncond(starting, torch.zeros_like(starting), torch.zeros_like(n_images), n_images)
    while True:
        code_rows, eoi_rows = codes_left > 0, eoi_next
        text_rows = ~done & ~code_rows & ~eoi_rows
        tok = torch.full((b,), -1, dtype=torch.long, device=dev)
        if code_rows.any():
            tok = torch.where(code_rows, tv + dec.sample_code(logits, generator), tok)
            codes_left = codes_left - code_rows.long()
            closed = code_rows & (codes_left == 0)
            done |= closed & (n_sampled >= cfg.max_new_tokens)
            eoi_next = closed & ~done
        else:
            eoi_next = torch.zeros_like(done)
        starting = torch.zeros_like(done)
        if text_rows.any():
            # BOS only starts a document, EOI only follows an image and PAD is never content;
            # codes only come inside an image, and BOI is barred once the image budget is spent.
            logits[:, [special.bos, special.eoi, special.pad]] = float("-inf")
            logits[:, tv:] = float("-inf")
            logits[n_images >= cfg.max_images, special.boi] = float("-inf")
            t = sample_token(logits, cfg.temperature, cfg.top_k, generator)
            tok = torch.where(text_rows, t, tok)
            n_sampled += text_rows.long()
            starting = text_rows & (t == special.boi)
            done |= text_rows & ((t == special.eos) | ((n_sampled >= cfg.max_new_tokens) & ~starting))
            codes_left = torch.where(starting, hw, codes_left)
            n_images += starting.long()
        sampled.append(tok)
        feed = torch.where(eoi_rows, special.eoi, torch.where(done, -1, tok))
        rows = feed >= 0
        if not rows.any():
            break
        logits = dec.step(feed, rows)
        # Rows whose next element is a code need unconditional logits too.
        cont = code_rows & (codes_left > 0)
        if (starting | cont).any():
            dec.advance_uncond(starting, cont, torch.where(cont, feed, 0), n_images)
    return [_segments(sampled, r, special, tv, dec.grid) for r in range(b)]


def text_to_image(model: Chameleon, captions: list[torch.Tensor], special: SpecialTokens,
                  cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """One image per caption (token ids [n]): the prompt is the caption then BOI.
    Returns code grids [B, h, w] long, ready for the VQ autoencoder's decode."""
    prompts = [[Text(torch.cat([c.long().cpu(), torch.tensor([special.boi])]))] for c in captions]
    out = generate(model, prompts, special, replace(cfg, max_new_tokens=0), generator, use_cache)
    return torch.stack([next(s.data for s in segs if isinstance(s, Image)) for segs in out])


def caption(model: Chameleon, codes: torch.Tensor, special: SpecialTokens,
            cfg: ChameleonSamplingConfig = ChameleonSamplingConfig(), generator: torch.Generator | None = None,
            use_cache: bool = True) -> list[torch.Tensor]:
    """Text after each image, codes [B, h, w] (greedy by default), without generating further
    images. Returns token ids [n] per image."""
    prompts = [[Image(c.long().cpu())] for c in codes]
    out = generate(model, prompts, special, replace(cfg, max_images=0), generator, use_cache)
    return [torch.cat([s.ids for s in segs if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)])
            for segs in out]
