"""The mixed stream's settings (data/stream.py builds the batches from them): row shape, the
modality mix, and the seed. Apart from the stream so that a run config imports no torch."""

from __future__ import annotations

from dataclasses import dataclass


CAPTION_CHOICES = ("all", "first", "describe")


@dataclass
class StreamConfig:
    seq_len: int = 256
    batch_rows: int = 8
    text_share: float = 0.5  # fraction of elements from text documents (paper: 1:1)
    caption_first: float = 0.8  # paper sec 4.1
    # Share of image-caption pairs trained as the image alone, [BOS BOI image EOI EOS]: the
    # unconditional branch of classifier-free guidance (Ho & Salimans 2022 drop 10-20%; the
    # paper does not state a rate, and without dropout that branch saw only image-first pairs,
    # whose noise limit kept it from ever training above t = 500).
    caption_dropout: float = 0.1
    # Which of an image's captions a pair trains on: "all" draws one of them uniformly per pair;
    # "first" always takes the first (for the shapes world its full description, a function of
    # the scene, so the image determines the caption; for real sets their first reference);
    # "describe" takes the first after an image (a description) and draws any before one (a
    # prompt), so captioning has one answer while generation sees every kind of prompt.
    captions: str = "all"
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 <= self.text_share <= 1.0:
            raise ValueError(f"text_share={self.text_share} must be in [0, 1]")
        if not 0.0 <= self.caption_first <= 1.0:
            raise ValueError(f"caption_first={self.caption_first} must be in [0, 1]")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout={self.caption_dropout} must be in [0, 1]")
        if self.captions not in CAPTION_CHOICES:
            raise ValueError(f"captions={self.captions!r}: valid: {', '.join(CAPTION_CHOICES)}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows={self.batch_rows} must be >= 1")
