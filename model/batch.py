"""Mixed-modal examples and the packed batch the models consume.

This is the contract between data/ (which builds batches) and model/ (which consumes them),
defined here because model/ imports nothing from data/ (DESIGN.md, "Contracts").

An example is an ordered list of segments: `Text` (token ids) or `Image` (a latent [C, H, W]
for Transfusion). `layout` turns one example into its element sequence: BOS, then each text
segment's ids, each image as BOI + P patch elements + EOI (paper section 3: an image's patches
sit between BOI and EOI inside the text), then EOS. Packing rows out of many layouts is
data/sequences.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Union

import torch

# Per-element modality codes.
TEXT = 0  # a text token, including BOS/EOS/BOI/EOI
IMAGE = 1  # one latent patch (Transfusion) or one image code (Chameleon)
PAD = 2  # padding: excluded from attention, every loss and the element count D


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens in the text vocabulary."""

    bos: int
    eos: int
    boi: int
    eoi: int
    pad: int


@dataclass
class Text:
    """A text segment: token ids [n] (no special tokens)."""

    ids: torch.Tensor


@dataclass
class Image:
    """An image segment: a latent [C, H, W] (Transfusion) or code ids [h, w] (Chameleon)."""

    data: torch.Tensor


Segment = Union[Text, Image]


@dataclass
class Layout:
    """One example as elements: tokens [n] (the pad id at patch elements), modality [n],
    image_slot [n] (index into `images` for patch elements, -1 elsewhere), and its images."""

    tokens: torch.Tensor
    modality: torch.Tensor
    image_slot: torch.Tensor
    images: list[torch.Tensor]
    image_first: list[bool]


def layout(
    segments: list[Segment],
    special: SpecialTokens,
    elements_per_image: int,
    add_bos: bool = True,
    add_eos: bool = True,
) -> Layout:
    """Lay out one example as elements (see module docstring).

    An image counts as "image first" when no text precedes it and some text follows it (an
    image-then-caption pair): the paper's noise limit (t <= 500) applies to those images so
    that the caption after them sees a recognisable image. An image with no text at all (an
    unconditional example from caption dropout) is not image-first: it is the guidance's
    unconditional branch and must train at every t. Python loops here run per segment, never
    per element.
    """
    tokens, modality, slots = [], [], []
    images, image_first = [], []
    seen_text = False

    def add_text(ids: torch.Tensor) -> None:
        tokens.append(ids.long())
        modality.append(torch.full_like(tokens[-1], TEXT))
        slots.append(torch.full_like(tokens[-1], -1))

    if add_bos:
        add_text(torch.tensor([special.bos]))
    for seg in segments:
        if isinstance(seg, Text):
            if seg.ids.numel():
                seen_text = True
            add_text(seg.ids.reshape(-1))
        elif isinstance(seg, Image):
            add_text(torch.tensor([special.boi]))
            tokens.append(torch.full((elements_per_image,), special.pad, dtype=torch.long))
            modality.append(torch.full((elements_per_image,), IMAGE, dtype=torch.long))
            slots.append(torch.full((elements_per_image,), len(images), dtype=torch.long))
            images.append(seg.data)
            image_first.append(not seen_text)  # and text follows: settled after the loop
            add_text(torch.tensor([special.eoi]))
        else:
            raise TypeError(f"segment must be Text or Image, got {type(seg).__name__}")
    if add_eos:
        add_text(torch.tensor([special.eos]))
    if not seen_text:  # no text anywhere: nothing follows any image either
        image_first = [False] * len(images)
    if not tokens:
        empty = torch.zeros(0, dtype=torch.long)
        return Layout(empty, empty.clone(), empty.clone(), [], [])
    return Layout(torch.cat(tokens), torch.cat(modality), torch.cat(slots), images, image_first)


@dataclass
class PackedBatch:
    """Rows of `seq_len` elements, the models' input.

    tokens     [B, L] long: text ids; the pad id at patch and padding elements
    modality   [B, L] long: TEXT / IMAGE / PAD
    image_id   [B, L] long: index into `images` for IMAGE elements, -1 elsewhere; images are
               numbered in row-major order of appearance, so the patches of image i are the
               i-th run of IMAGE elements in tokens.flatten()
    doc_id     [B, L] long: document index within its row, -1 for padding
    position   [B, L] long: position within the document (RoPE), restarting per document
    images     [n, C, H, W] float latents (Transfusion) or [n, h, w] long codes; n may be 0
    image_first [n] bool: the image precedes all text of its example and text follows (noise limit applies)
    """

    tokens: torch.Tensor
    modality: torch.Tensor
    image_id: torch.Tensor
    doc_id: torch.Tensor
    position: torch.Tensor
    images: torch.Tensor
    image_first: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PackedBatch":
        return PackedBatch(
            **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        )

    def rows(self, start: int, stop: int) -> tuple["PackedBatch", slice]:
        """Rows [start, stop) as a batch of their own, and the slice of `images` they hold
        (images are numbered row-major, so a block of rows holds a contiguous run of them)."""
        img = self.image_id[:start]
        first = int(img.max()) + 1 if (img >= 0).any() else 0
        held = self.image_id[start:stop]
        last = int(held.max()) + 1 if (held >= 0).any() else first
        sel = slice(first, max(first, last))
        image_id = torch.where(held >= 0, held - first, held)
        sub = PackedBatch(self.tokens[start:stop], self.modality[start:stop], image_id, self.doc_id[start:stop],
                          self.position[start:stop], self.images[sel], self.image_first[sel])
        return sub, sel

    @property
    def num_elements(self) -> int:
        """D for this batch: every non-padding element (text, BOI/EOI, image patches)."""
        return int((self.modality != PAD).sum())

    def lm_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where next-token loss applies and its targets.

        Returns (mask [B, L] bool, targets [B, L] long). Position i predicts element i+1 when
        both are text of the same document; so BOI (whose successor is a patch) and the last
        element of a row get no loss, and EOI predicts the text after the image (paper sec 3.2).
        """
        is_text = self.modality == TEXT
        nxt_text = torch.zeros_like(is_text)
        nxt_text[:, :-1] = is_text[:, 1:]
        same_doc = torch.zeros_like(is_text)
        same_doc[:, :-1] = self.doc_id[:, 1:] == self.doc_id[:, :-1]
        targets = torch.full_like(self.tokens, -1)
        targets[:, :-1] = self.tokens[:, 1:]
        return is_text & nxt_text & same_doc, targets

    def check(self) -> None:
        """Raise ValueError on inconsistent shapes (a clear message beats an index error deep
        inside attention)."""
        shape = self.tokens.shape
        for name in ("modality", "image_id", "doc_id", "position"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"PackedBatch.{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected {tuple(shape)} like tokens")
        n = self.images.shape[0]
        if self.image_first.shape != (n,):
            raise ValueError(f"PackedBatch.image_first has shape {tuple(self.image_first.shape)}, "
                             f"expected ({n},): one flag per image")
        ids = self.image_id[self.modality == IMAGE]
        if n and (ids.numel() == 0 or int(ids.max()) >= n):
            raise ValueError(f"PackedBatch.image_id refers to image {int(ids.max()) if ids.numel() else '-'} "
                             f"but images holds {n}")
