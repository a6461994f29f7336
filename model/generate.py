"""Mixed-modal decoding with a Transfusion model (paper sec 3.3), apart from the model.

Text mode samples tokens (greedy, temperature, top-k). When a row emits BOI it switches to
image mode: n pure-noise patches are appended and denoised over K steps, each step overwriting
the patches in place; then EOI is appended and the row returns to text mode. Prompts may hold
text, images (captioning) or both, and a prompt ending in BOI asks for an image at once.

Keys/values of the prefix are cached: text steps compute one new element per row, and the
denoising steps compute only the image's patches against the fixed prefix. Rows advance in
lockstep through a shared slot pointer; a row that sits a step out writes an invalid slot
(see model/kv_cache.py). `use_cache=False` recomputes the whole sequence at every call: the
reference the cached path is tested against.

Classifier-free guidance mixes the noise predicted with the real prefix and with an
unconditional one, BOS BOI, i.e. the image at sequence start (paper sec 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.batch import PAD, Image, Segment, SpecialTokens, Text, layout
from model.diffusion import Diffusion, guided
from model.masks import cached_mask
from model.rope import rope_angles
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


def sample_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from logits [B, V] -> [B] long."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


class DecodingContext:
    """The growing sequence of B rows of a model with `.backbone`, `.cfg.backbone` and
    `.bidirectional_images` (Transfusion, or the Chameleon baseline). `run` feeds new input vectors [B, q, dim] with their
    positions, doc and image ids [B, q] and returns the backbone outputs [B, q, dim]; with
    commit=False the new elements are forgotten afterwards (a denoising step)."""

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache = None
        self.x = self.pos = self.doc = self.img = None  # committed inputs (uncached mode)

    def run(self, x, pos, doc, img, commit: bool) -> torch.Tensor:
        m, q = self.model, x.shape[1]
        bidir = m.bidirectional_images
        if self.use_cache:
            if self.cache is None:
                self.cache = m.backbone.new_cache(x.shape[0], 2 * q, x.device, x.dtype)
            c = self.cache
            c.set_ids(doc, img)
            end = c.length + q
            mask = cached_mask(c.doc[:, :end], c.img[:, :end], q, bidir)
            cos, sin = rope_angles(pos, m.cfg.backbone.head_dim, m.cfg.backbone.rope_theta)
            h = m.backbone(x, cos, sin, mask, c)
            if commit:
                c.commit(q)
            return h
        if self.x is not None:
            x, pos = torch.cat([self.x, x], 1), torch.cat([self.pos, pos], 1)
            doc, img = torch.cat([self.doc, doc], 1), torch.cat([self.img, img], 1)
        cos, sin = rope_angles(pos, m.cfg.backbone.head_dim, m.cfg.backbone.rope_theta)
        h = m.backbone(x, cos, sin, cached_mask(doc, img, x.shape[1], bidir))
        if commit:
            self.x, self.pos, self.doc, self.img = x, pos, doc, img
        return h[:, -q:]


def feed_tokens(model: nn.Module, ctx: DecodingContext, tokens: torch.Tensor, rows: torch.Tensor,
                pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One text step: feed tokens [B] (only `rows` [B] bool are real; the others write an
    invalid slot) at positions pos [B]; returns (next logits [B, V], advanced positions [B])."""
    x = model.tok_emb(tokens.clamp(min=0))[:, None]
    doc = torch.where(rows, 0, -1)[:, None]
    h = ctx.run(x, pos[:, None], doc, torch.full_like(doc, -1), commit=True)
    return model.head(h[:, -1]), pos + rows.long()


class _Decoder:
    """State of one batched generation call."""

    def __init__(self, model: Transfusion, diffusion: Diffusion, special: SpecialTokens,
                 cfg: SamplingConfig, generator, use_cache: bool) -> None:
        self.model, self.diffusion, self.special, self.cfg = model, diffusion, special, cfg
        self.generator, self.use_cache = generator, use_cache
        p = model.cfg.patch
        self.elements_per_image, self.latent_shape = p.elements_per_image, (p.latent_channels, p.latent_size, p.latent_size)
        self.param = next(model.parameters())
        self.ctx = DecodingContext(model, use_cache)
        self.uncond = None  # the BOS BOI context for guidance, built on first use
        self.next_image_id = 0

    def prefill(self, prompts: list[list[Segment]]) -> torch.Tensor:
        """Left-pad the prompts into one block, run it, return the last position's logits [B, V]."""
        dev, sp = self.param.device, self.special
        lays = [layout(p, sp, self.elements_per_image, add_bos=True, add_eos=False) for p in prompts]
        length = max(lay.tokens.shape[0] for lay in lays)
        b = len(lays)
        tokens = torch.full((b, length), sp.pad, dtype=torch.long)
        modality = torch.full((b, length), PAD, dtype=torch.long)
        img = torch.full((b, length), -1, dtype=torch.long)
        images = []
        for r, lay in enumerate(lays):  # per prompt, not per element
            n = lay.tokens.shape[0]
            tokens[r, length - n:], modality[r, length - n:] = lay.tokens, lay.modality
            img[r, length - n:] = torch.where(lay.image_slot >= 0, lay.image_slot + len(images), -1)
            images += lay.images
        valid = torch.arange(length) >= length - torch.tensor([lay.tokens.shape[0] for lay in lays])[:, None]
        tokens, modality, img, valid = tokens.to(dev), modality.to(dev), img.to(dev), valid.to(dev)
        self.next_image_id = len(images)
        x0 = torch.stack(images).to(dev, self.param.dtype) if images else \
            torch.zeros((0, *self.latent_shape), device=dev, dtype=self.param.dtype)
        x, _ = self.model.embed(tokens, modality, x0, torch.zeros(x0.shape[0], dtype=torch.long, device=dev))
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        h = self.ctx.run(x, pos, torch.where(valid, 0, -1), img, commit=True)
        self.pos = valid.sum(1)  # next RoPE position per row
        self.last = tokens[:, -1]
        return self.model.head(h[:, -1])

    def step(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (only `rows` [B] bool are real); return next logits [B, V]."""
        logits, self.pos = feed_tokens(self.model, self.ctx, tokens, rows, self.pos)
        return logits

    def _image_pass(self, ctx: DecodingContext, rows, start_pos, x_t, t, commit: bool) -> torch.Tensor:
        b, p = x_t.shape[0], self.elements_per_image
        pos = start_pos[:, None] + torch.arange(p, device=x_t.device)
        doc = torch.where(rows, 0, -1)[:, None].expand(b, p)
        img = torch.full((b, p), self.next_image_id, dtype=torch.long, device=x_t.device)
        tokens, skips = self.model.patch_enc(x_t, t)
        h = ctx.run(tokens, pos, doc, img, commit)
        return self.model.decode_images(h, t, skips)

    def image(self, rows: torch.Tensor) -> torch.Tensor:
        """Generate one image for the `rows` [B] bool (the others sit out); returns latents
        [B, C, H, W] (meaningful at `rows`) and commits the clean image to the context."""
        cfg, dev = self.cfg, self.param.device
        b = rows.shape[0]

        def cond(x_t, t):
            return self._image_pass(self.ctx, rows, self.pos, x_t, t, commit=False)

        model_fn = cond
        if cfg.cfg_scale != 1.0:
            if self.uncond is None:
                self.uncond = DecodingContext(self.model, self.use_cache)
                sp = self.special
                ids = torch.tensor([[sp.bos, sp.boi]], device=dev).expand(b, 2)
                self.uncond.run(self.model.tok_emb(ids), torch.arange(2, device=dev).expand(b, 2),
                                torch.zeros_like(ids), torch.full_like(ids, -1), commit=True)
            two = torch.full((b,), 2, device=dev)

            def uncond(x_t, t):
                return self._image_pass(self.uncond, rows, two, x_t, t, commit=False)

            model_fn = guided(cond, uncond, cfg.cfg_scale)
        x_T = torch.randn((b, *self.latent_shape), generator=self.generator, device=dev).to(self.param.dtype)
        x0 = self.diffusion.sample(model_fn, x_T, cfg.image_steps, method=cfg.sampler, eta=cfg.eta,
                                   generator=self.generator, clip_x0=cfg.clip_x0, spacing=cfg.spacing)
        # The finished image joins the prefix as a clean (t = 0) image, as in captioning.
        self._image_pass(self.ctx, rows, self.pos, x0, torch.zeros(b, dtype=torch.long, device=dev), commit=True)
        self.pos = self.pos + rows.long() * self.elements_per_image
        self.next_image_id += 1
        return x0


def _segments(tokens: list[torch.Tensor], images: list[tuple[torch.Tensor, torch.Tensor]],
              row: int, special: SpecialTokens) -> list[Segment]:
    """Rebuild one row's generated continuation from the sampled tokens and images."""
    out: list[Segment] = []
    text: list[int] = []
    row_images = iter(x0[row] for rows, x0 in images if rows[row])
    for tok in (int(t[row]) for t in tokens):  # the generated tokens of one row, at the end
        if tok < 0:
            continue
        if tok == special.boi:
            if text:
                out.append(Text(torch.tensor(text)))
                text = []
            out.append(Image(next(row_images)))
        elif tok != special.eos:
            text.append(tok)
    if text:
        out.append(Text(torch.tensor(text)))
    return out


@torch.no_grad()
def generate(model: Transfusion, diffusion: Diffusion, prompts: list[list[Segment]], special: SpecialTokens,
             cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[Segment]]:
    """Continue each prompt; returns per prompt the generated segments: Text(ids [n]) and
    Image(latent [C, H, W]). Prompt images are given as clean latents."""
    dec = _Decoder(model, diffusion, special, cfg, generator, use_cache)
    logits = dec.prefill(prompts)
    b, dev = len(prompts), logits.device
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    n_sampled = torch.zeros(b, dtype=torch.long, device=dev)
    n_images = torch.zeros(b, dtype=torch.long, device=dev)
    need_image = dec.last == special.boi
    feed = torch.full((b,), -1, dtype=torch.long, device=dev)
    sampled: list[torch.Tensor] = []
    images: list[tuple[torch.Tensor, torch.Tensor]] = []
    if need_image.any():  # prompts ending in BOI: count that BOI as this call's image marker
        sampled.append(torch.where(need_image, special.boi, -1))
    sample_rows = ~need_image
    while True:
        if sample_rows.any():
            # BOS only starts a document, EOI only follows an image and PAD is never content;
            # BOI is barred once the row's
            # image budget is spent.
            logits[:, [special.bos, special.eoi, special.pad]] = float("-inf")
            logits[n_images >= cfg.max_images, special.boi] = float("-inf")
            tok = sample_token(logits, cfg.temperature, cfg.top_k, generator)
            tok = torch.where(sample_rows, tok, -1)
            sampled.append(tok)
            n_sampled += sample_rows.long()
            finished = sample_rows & ((tok == special.eos) | ((n_sampled >= cfg.max_new_tokens) & (tok != special.boi)))
            done |= finished
            feed = torch.where(sample_rows & ~finished, tok, -1)
        if need_image.any():
            images.append((need_image.clone(), dec.image(need_image)))
            n_images += need_image.long()
            done |= need_image & (n_sampled >= cfg.max_new_tokens)
            feed = torch.where(need_image & ~done, special.eoi, feed)
            need_image = torch.zeros_like(need_image)
        rows = feed >= 0
        if not rows.any():
            break
        logits = dec.step(feed, rows)
        need_image = rows & (feed == special.boi)
        sample_rows = rows & ~need_image & ~done
        feed = torch.full_like(feed, -1)
    return [_segments(sampled, images, r, special) for r in range(b)]


def text_to_image(model: Transfusion, diffusion: Diffusion, captions: list[torch.Tensor], special: SpecialTokens,
                  cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """One image per caption (token ids [n]): the prompt is the caption then BOI.
    Returns latents [B, C, H, W]."""
    prompts = [[Text(torch.cat([c.long().cpu(), torch.tensor([special.boi])]))] for c in captions]
    out = generate(model, diffusion, prompts, special, SamplingConfig(**{**cfg.__dict__, "max_new_tokens": 0}),
                   generator, use_cache)
    return torch.stack([next(s.data for s in segs if isinstance(s, Image)) for segs in out])


def caption(model: Transfusion, diffusion: Diffusion, latents: torch.Tensor, special: SpecialTokens,
            cfg: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None,
            use_cache: bool = True) -> list[torch.Tensor]:
    """Text after each image latent [B, C, H, W] (greedy by default, paper sec 4.1), without
    generating further images. Returns token ids [n] per image."""
    prompts = [[Image(x)] for x in latents]
    out = generate(model, diffusion, prompts, special, SamplingConfig(**{**cfg.__dict__, "max_images": 0}),
                   generator, use_cache)
    return [torch.cat([s.ids for s in segs if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)])
            for segs in out]
