"""The training stream: text documents and image-caption pairs, mixed and packed into batches.

Paper sec 4.1: text and image data are mixed 1:1 by sequence elements, and a caption comes
before its image 80% of the time (image first otherwise, which also gives the model
unconditional images for guidance). Both ratios are configurable here.

Mixing is by deficit rather than by coin: the next example comes from whichever side is
behind its target share of elements so far, so the realised ratio tracks the target at every
scale (a coin would drift by sqrt(n)). Every random choice (which caption, which order) comes
from one torch.Generator whose state is saved, and each source keeps an exact position, so
`state_dict()` -> `load_state_dict()` resumes with exactly the batches an uninterrupted run
would have seen (DESIGN.md: resume includes the data position).

A source is any object with `next() -> item` plus `state_dict()` / `load_state_dict()`:
text sources yield token id tensors [n]; pair sources yield (image tensor, captions), the
captions as token ids (shard sets store them tokenized) or as text, which the stream's
`encode_caption` then tokenizes.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from data.arrays import ShardSet
from data.order import ShardOrder
from data.sequences import Packer
from data.stream_config import StreamConfig  # torch-free, so a run config can hold one
from model.batch import Image, PackedBatch, SpecialTokens, Text


class Source(Protocol):
    def next(self): ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class _ShardSource:
    """A shard set read in one stream's order (data/order.py); its position is the order's."""

    def __init__(self, shards: ShardSet, kinds: tuple[str, ...], seed: int, stream: int, streams: int) -> None:
        if shards.kind not in kinds:
            raise ValueError(f"{shards.directory} holds {shards.kind}, not {' or '.join(kinds)}")
        self.shards = shards
        self.order = ShardOrder(shards.sizes, seed, stream, streams)

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)


class ShardDocuments(_ShardSource):
    """Text documents of a shard set (data/arrays.py). Yields token ids [n] (int64)."""

    def __init__(self, shards: ShardSet, seed: int = 0, stream: int = 0, streams: int = 1) -> None:
        super().__init__(shards, ("text",), seed, stream, streams)

    def next(self) -> torch.Tensor:
        shard, i = self.order.next()
        return torch.from_numpy(self.shards.shard(shard).doc(i).astype(np.int64))


class ShardPairs(_ShardSource):
    """Encoded images of a shard set (latents [C, h, w] float32, or codes [h, w] int64) with
    their tokenized captions. Yields (image, [caption ids as int arrays]): the stream converts
    only the caption it picks."""

    def __init__(self, shards: ShardSet, seed: int = 0, stream: int = 0, streams: int = 1) -> None:
        super().__init__(shards, ("latents", "codes"), seed, stream, streams)
        self.dtype = np.int64 if shards.kind == "codes" else np.float32

    def next(self) -> tuple[torch.Tensor, list[np.ndarray]]:
        shard, i = self.order.next()
        image, captions = self.shards.shard(shard).item(i)
        return torch.from_numpy(np.array(image, dtype=self.dtype)), captions


class TokenizedText:
    """Real-scale text: documents from a resumable reader (data.text_readers.TextReader, e.g.
    JSONL or parquet shards with repeat=True), tokenized as they are read. Yields ids [n]."""

    def __init__(self, reader, encode: Callable[[str], list[int]]) -> None:
        self.reader, self.encode = reader, encode

    def next(self) -> torch.Tensor:
        return torch.tensor(self.encode(self.reader.next()), dtype=torch.long)

    def state_dict(self) -> dict:
        return self.reader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reader.load_state_dict(state)


class EncodedImages:
    """Real-scale image-caption pairs: records from a resumable reader (e.g.
    data.image_text.WebDatasetReader with loop=True), encoded by an autoencoder as they are
    read (data.autoencoders.ImageAutoencoder: KL latents or VQ codes). Yields (image, captions)."""

    def __init__(self, reader, autoencoder) -> None:
        self.reader, self.autoencoder = reader, autoencoder
        self._records = iter(reader)

    def next(self) -> tuple[torch.Tensor, list[str]]:
        try:
            record = next(self._records)
        except StopIteration:
            raise ValueError("the image-caption reader ran out: open it with loop=True for training") from None
        return self.autoencoder.encode(record.image[None])[0].cpu(), record.captions

    def state_dict(self) -> dict:
        return self.reader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reader.load_state_dict(state)
        self._records = iter(self.reader)  # a fresh pass starts at the restored position


class MixedStream:
    """Batches of packed rows from a text source and an image-caption source.

    encode_caption: str -> token ids [n]. elements_per_image: elements per image (Transfusion
    latent patches, or Chameleon codes). Either source may be None when its share is 0.
    """

    def __init__(self, cfg: StreamConfig, special: SpecialTokens, elements_per_image: int,
                 text: Source | None, pairs: Source | None,
                 encode_caption: Callable[[str], torch.Tensor] | None = None) -> None:
        cfg.validate()
        if text is None and cfg.text_share > 0:
            raise ValueError(f"text_share={cfg.text_share} but no text source was given")
        if pairs is None and cfg.text_share < 1:
            raise ValueError(f"text_share={cfg.text_share} leaves room for images but no image source was given")
        self.cfg, self.text, self.pairs, self.encode_caption = cfg, text, pairs, encode_caption
        self.packer = Packer(cfg.seq_len, special, elements_per_image)
        self.patches = elements_per_image
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.text_elements = 0
        self.pair_elements = 0

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.rng))

    def next_example(self) -> list:
        """The next example's segments, from the side that is behind its share."""
        total = self.text_elements + self.pair_elements
        use_text = self.cfg.text_share > 0 and (
            self.cfg.text_share == 1 or self.text_elements <= self.cfg.text_share * total)
        if use_text:
            ids = self.text.next()
            self.text_elements += ids.numel() + 2  # BOS, EOS
            return [Text(ids)]
        image, captions = self.pairs.next()
        # Three draws per pair whatever the outcome, so the stream's RNG does not depend on it.
        u, first, drop = self._uniform(), self._uniform(), self._uniform()
        caption_first = first < self.cfg.caption_first
        drawn = self.cfg.captions == "all" or (self.cfg.captions == "describe" and caption_first)
        pick = min(int(u * len(captions)), len(captions) - 1) if drawn else 0
        if drop < self.cfg.caption_dropout:
            self.pair_elements += self.patches + 4  # BOS, BOI, EOI, EOS
            return [Image(image)]
        ids = self._caption_ids(captions[pick])
        self.pair_elements += ids.numel() + self.patches + 4
        if caption_first:
            return [Text(ids), Image(image)]
        return [Image(image), Text(ids)]

    def _caption_ids(self, caption) -> torch.Tensor:
        if isinstance(caption, np.ndarray):  # tokenized in a shard set
            return torch.from_numpy(caption.astype(np.int64))
        if isinstance(caption, torch.Tensor):
            return caption
        if self.encode_caption is None:
            raise ValueError("the image-caption source yields text captions but the stream has no tokenizer "
                             "(encode_caption)")
        return torch.as_tensor(self.encode_caption(caption), dtype=torch.long)

    def next_batch(self) -> PackedBatch:
        """The next batch_rows full rows."""
        while self.packer.ready() < self.cfg.batch_rows:
            self.packer.add(self.next_example())
        return self.packer.pop(self.cfg.batch_rows)

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.get_state(),
            "text_elements": self.text_elements,
            "pair_elements": self.pair_elements,
            "text": self.text.state_dict() if self.text is not None else None,
            "pairs": self.pairs.state_dict() if self.pairs is not None else None,
            "packer": self.packer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
        self.text_elements, self.pair_elements = state["text_elements"], state["pair_elements"]
        if self.text is not None:
            self.text.load_state_dict(state["text"])
        if self.pairs is not None:
            self.pairs.load_state_dict(state["pairs"])
        self.packer.load_state_dict(state["packer"])
