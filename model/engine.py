"""One decoding engine for both families, apart from the models (after nanochat's Engine).

    engine = Engine(model, hook, special, generator)        # hook: the family's images
    segments = engine.generate(prompts, cfg)                # per prompt: Text / Image segments

Prompts may hold text, images (captioning) or both, and a prompt ending in BOI asks for an
image at once. Prefill left-pads the prompts into one block; then every row advances in
lockstep: text rows sample a token (greedy, temperature, top-k) and feed it. When a row emits
BOI it switches to image mode and the family's `ImageHook` makes the image for those rows
against the row's context (Transfusion: denoising its patches in place, model/generate.py;
Chameleon: sampling its codes one by one, baselines/generate.py), committing the finished
image to the context; then EOI is fed and the row returns to text mode. BOS, EOI and PAD are
never sampled, and BOI is barred once a row has made max_images images.

State is per row: position, tokens sampled, images made, done. Keys/values of the prefix are
cached (model/kv_cache.py): a text step computes one new element per row, and a row that
sits a step out writes an invalid slot. `use_cache=False` recomputes the whole sequence at
every call, the reference the cached path is tested against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from model.batch import PAD, Image, Segment, SpecialTokens, Text, layout


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
    """The growing sequence of B rows of a model.TokenModel. `run` feeds new input vectors
    [B, q, dim] with their positions, doc and image ids [B, q] and returns the backbone outputs
    [B, q, dim]; with commit=False the new elements are forgotten afterwards (a denoising step)."""

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache = None
        self.x = self.pos = self.doc = self.img = None  # committed inputs (uncached mode)

    def run(self, x, pos, doc, img, commit: bool) -> torch.Tensor:
        q = x.shape[1]
        if self.use_cache:
            if self.cache is None:
                self.cache = self.model.new_cache(x.shape[0], 2 * q, x.device, x.dtype)
            h = self.model.decode(x, pos, doc, img, self.cache)
            if commit:
                self.cache.commit(q)
            return h
        if self.x is not None:
            x, pos = torch.cat([self.x, x], 1), torch.cat([self.pos, pos], 1)
            doc, img = torch.cat([self.doc, doc], 1), torch.cat([self.img, img], 1)
        h = self.model.decode(x, pos, doc, img)
        if commit:
            self.x, self.pos, self.doc, self.img = x, pos, doc, img
        return h[:, -q:]

    def feed(self, tokens: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, doc: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Commit one token per row, tokens [B] (only `rows` [B] bool are real) at positions
        pos [B], as document doc [B] (default 0); returns the next logits [B, V]."""
        doc = torch.zeros_like(tokens) if doc is None else doc
        x = self.model.tok_emb(tokens.clamp(min=0))[:, None]
        d = torch.where(rows, doc, -1)[:, None]
        h = self.run(x, pos[:, None], d, torch.full_like(d, -1), commit=True)
        return self.model.head(h[:, -1])


class ImageHook(ABC):
    """What one family does with images while decoding."""

    elements_per_image: int
    text_vocab: int | None = None  # text ids lie below it (a joint vocabulary); None: all ids

    @abstractmethod
    def embed(self, tokens: torch.Tensor, modality: torch.Tensor, images: list[torch.Tensor]) -> torch.Tensor:
        """Input vectors [B, L, dim] of prompt rows tokens, modality [B, L] (on the model's
        device) whose image elements hold `images` in row-major order of appearance."""

    @abstractmethod
    def image(self, engine: "Engine", rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Make one image for the `rows` [B] bool (the others sit out) after their BOI, whose
        next-element logits are `logits` [B, V]; commit it to engine.ctx and advance
        engine.pos for those rows (engine.n_images [B] counts the images made before this
        one). Returns the images [B, ...] (meaningful at `rows`)."""


class Engine:
    """State of one batched generation call over a model.TokenModel."""

    def __init__(self, model: nn.Module, hook: ImageHook, special: SpecialTokens,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> None:
        self.model, self.hook, self.special = model, hook, special
        self.generator, self.use_cache = generator, use_cache
        self.device = next(model.parameters()).device
        self.ctx = DecodingContext(model, use_cache)
        self.next_image_id = 0  # image ids only need to differ between images (bidirectional masks)

    def prefill(self, prompts: list[list[Segment]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the left-padded prompts; returns (last position's logits [B, V], last token [B])."""
        sp, dev = self.special, self.device
        lays = [layout(p, sp, self.hook.elements_per_image, add_bos=True, add_eos=False) for p in prompts]
        length = max(lay.tokens.shape[0] for lay in lays)
        b = len(lays)
        tokens = torch.full((b, length), sp.pad, dtype=torch.long)
        modality = torch.full((b, length), PAD, dtype=torch.long)
        img = torch.full((b, length), -1, dtype=torch.long)
        images: list[torch.Tensor] = []
        for r, lay in enumerate(lays):  # per prompt, not per element
            n = lay.tokens.shape[0]
            tokens[r, length - n:], modality[r, length - n:] = lay.tokens, lay.modality
            img[r, length - n:] = torch.where(lay.image_slot >= 0, lay.image_slot + len(images), -1)
            images += lay.images
        n_real = torch.tensor([lay.tokens.shape[0] for lay in lays], device=dev)
        valid = torch.arange(length, device=dev) >= length - n_real[:, None]
        tokens, modality, img = tokens.to(dev), modality.to(dev), img.to(dev)
        self.next_image_id = len(images)
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        h = self.ctx.run(self.hook.embed(tokens, modality, images), pos, torch.where(valid, 0, -1), img, commit=True)
        self.pos = n_real  # next RoPE position per row
        return self.model.head(h[:, -1]), tokens[:, -1]

    def step(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (only `rows` [B] bool are real); return next logits [B, V]."""
        logits = self.ctx.feed(tokens, rows, self.pos)
        self.pos = self.pos + rows.long()
        return logits

    @torch.no_grad()
    def generate(self, prompts: list[list[Segment]], cfg: Any) -> list[list[Segment]]:
        """Continue each prompt under cfg's text settings (max_new_tokens: sampled tokens per row,
        BOI and EOS included; temperature, top_k; max_images per row). Returns per prompt the
        generated segments: Text(ids [n]) and Image(the hook's image)."""
        sp = self.special
        logits, last = self.prefill(prompts)
        b, dev = len(prompts), logits.device
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        n_sampled = torch.zeros(b, dtype=torch.long, device=dev)
        self.n_images = n_images = torch.zeros(b, dtype=torch.long, device=dev)  # per row, read by hooks
        need_image = last == sp.boi
        feed = torch.full((b,), -1, dtype=torch.long, device=dev)
        sampled: list[torch.Tensor] = []  # per step: the id each row drew, -1 for none
        images: list[tuple[torch.Tensor, torch.Tensor]] = []
        if need_image.any():  # prompts ending in BOI: count that BOI as this call's image marker
            sampled.append(torch.where(need_image, sp.boi, -1))
        sample_rows = ~need_image
        while True:
            if sample_rows.any():
                text = logits.clone()  # the unmasked logits are the image hook's (a code's first logits)
                text[:, [sp.bos, sp.eoi, sp.pad]] = float("-inf")
                if self.hook.text_vocab is not None:  # image codes come only inside an image
                    text[:, self.hook.text_vocab:] = float("-inf")
                text[n_images >= cfg.max_images, sp.boi] = float("-inf")
                tok = torch.where(sample_rows, sample_token(text, cfg.temperature, cfg.top_k, self.generator), -1)
                sampled.append(tok)
                n_sampled += sample_rows.long()
                finished = sample_rows & ((tok == sp.eos) | ((n_sampled >= cfg.max_new_tokens) & (tok != sp.boi)))
                done |= finished
                feed = torch.where(sample_rows & ~finished, tok, -1)
            if need_image.any():
                images.append((need_image.clone(), self.hook.image(self, need_image, logits)))
                self.next_image_id += 1
                n_images += need_image.long()
                done |= need_image & (n_sampled >= cfg.max_new_tokens)
                feed = torch.where(need_image & ~done, sp.eoi, feed)
                need_image = torch.zeros_like(need_image)
            rows = feed >= 0
            if not rows.any():
                break
            logits = self.step(feed, rows)
            need_image = rows & (feed == sp.boi)
            sample_rows = rows & ~need_image & ~done
            feed = torch.full_like(feed, -1)
        return [_segments(sampled, images, r, sp) for r in range(b)]


def _segments(tokens: list[torch.Tensor], images: list[tuple[torch.Tensor, torch.Tensor]],
              row: int, special: SpecialTokens) -> list[Segment]:
    """Rebuild one row's generated continuation from the sampled tokens and images."""
    out: list[Segment] = []
    text: list[int] = []
    row_images = iter(x[row] for rows, x in images if rows[row])
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


def image_prompts(captions: list[torch.Tensor], special: SpecialTokens) -> list[list[Segment]]:
    """One prompt per caption (token ids [n]): the caption, then BOI (make the image now)."""
    return [[Text(torch.cat([c.long().cpu(), torch.tensor([special.boi])]))] for c in captions]


def first_images(out: list[list[Segment]]) -> torch.Tensor:
    """The first image of each row's continuation, stacked: [B, ...]."""
    return torch.stack([next(s.data for s in segs if isinstance(s, Image)) for segs in out])


def texts(out: list[list[Segment]]) -> list[torch.Tensor]:
    """Each row's generated text ids [n], its text segments joined."""
    return [torch.cat([s.ids for s in segs if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)])
            for segs in out]
