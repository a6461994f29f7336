"""Packing mixed-modal examples into fixed-length rows (DESIGN.md, "Mixed-modal example").

Each example is laid out by model.batch.layout (BOS, text, BOI + patches + EOI per image,
EOS) and placed into rows of `seq_len` elements:
- an example that fits in what is left of the current row goes there;
- an example with an image that fits in an empty row starts a new row (padding the rest of
  the current one), so a caption and its image are never separated;
- anything longer (long text documents) is split across rows, but never inside an image
  (BOI .. EOI stays whole); each piece is its own document in its row.
Documents in one row cannot attend to each other (their doc_id differs) and positions restart
per document. Padding gets modality PAD and doc_id -1: no loss, no attention, not counted in D.
Work is done per segment and per placement with tensor slices, never per element.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from model.batch import IMAGE, PAD, PackedBatch, Segment, SpecialTokens, layout


@dataclass
class _Row:
    tokens: list[torch.Tensor] = field(default_factory=list)
    modality: list[torch.Tensor] = field(default_factory=list)
    slot: list[torch.Tensor] = field(default_factory=list)  # image index within this row, -1 text
    doc: list[torch.Tensor] = field(default_factory=list)
    position: list[torch.Tensor] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    image_first: list[bool] = field(default_factory=list)
    used: int = 0
    n_docs: int = 0


def _cut_points(modality: torch.Tensor) -> torch.Tensor:
    """Indices where a layout may be cut: every index except those inside an image block
    (after its BOI up to and including its EOI). Returned as a bool [n+1] (cut before i)."""
    n = modality.shape[0]
    is_img = torch.zeros(n + 2, dtype=torch.bool)
    is_img[1:n + 1] = modality == IMAGE
    # Not before a patch (that also keeps BOI with its first patch) and not right after one
    # (that would orphan EOI). Cutting right before BOI moves the whole image on.
    return ~is_img[1:] & ~is_img[:-1]


class Packer:
    """Turns a stream of examples into rows; `pop(n)` returns full rows as a PackedBatch."""

    def __init__(self, seq_len: int, special: SpecialTokens, elements_per_image: int) -> None:
        if seq_len < elements_per_image + 4:
            raise ValueError(f"seq_len={seq_len} cannot hold one image ({elements_per_image} patches + BOS, BOI, "
                             f"EOI, EOS): raise seq_len or use a larger patch size")
        self.seq_len, self.special, self.patches = seq_len, special, elements_per_image
        self.full: list[_Row] = []
        self.row = _Row()

    def add(self, segments: list[Segment]) -> None:
        """Lay out one example and place it (see module docstring)."""
        lay = layout(segments, self.special, self.patches)
        n = lay.tokens.shape[0]
        if n == 0:
            return
        room = self.seq_len - self.row.used
        if n > room and lay.images and n <= self.seq_len:
            self._close()
            room = self.seq_len
        start = 0
        cuts = None
        while start < n:
            end = min(n, start + room)
            if end < n:
                if cuts is None:
                    cuts = _cut_points(lay.modality)
                allowed = torch.nonzero(cuts[start + 1:end + 1]).flatten()
                if allowed.numel() == 0:  # an image block does not fit in what is left; it
                    # always fits in an empty row (checked in __init__)
                    self._close()
                    room = self.seq_len
                    continue
                end = start + 1 + int(allowed[-1])
            self._place(lay, start, end)
            start = end
            room = self.seq_len - self.row.used
            if room == 0:
                self._close()
                room = self.seq_len

    def _place(self, lay, start: int, end: int) -> None:
        row, n = self.row, end - start
        slots = lay.image_slot[start:end]
        local = slots.clone()
        present = sorted(set(slots[slots >= 0].tolist()))  # per image, not per element
        for i in present:
            local[slots == i] = len(row.images)
            row.images.append(lay.images[i])
            row.image_first.append(lay.image_first[i])
        row.tokens.append(lay.tokens[start:end])
        row.modality.append(lay.modality[start:end])
        row.slot.append(local)
        row.doc.append(torch.full((n,), row.n_docs, dtype=torch.long))
        row.position.append(torch.arange(n))
        row.used += n
        row.n_docs += 1

    def _close(self) -> None:
        row = self.row
        if row.used == 0:
            return
        pad = self.seq_len - row.used
        if pad:
            row.tokens.append(torch.full((pad,), self.special.pad, dtype=torch.long))
            row.modality.append(torch.full((pad,), PAD, dtype=torch.long))
            row.slot.append(torch.full((pad,), -1, dtype=torch.long))
            row.doc.append(torch.full((pad,), -1, dtype=torch.long))
            row.position.append(torch.zeros(pad, dtype=torch.long))
        self.full.append(row)
        self.row = _Row()

    def state_dict(self) -> dict:
        """Rows not yet popped (complete and partial): what a resumed stream must start from."""
        return {"full": [copy.deepcopy(r.__dict__) for r in self.full], "row": copy.deepcopy(self.row.__dict__)}

    def load_state_dict(self, state: dict) -> None:
        self.full = [_Row(**copy.deepcopy(r)) for r in state["full"]]
        self.row = _Row(**copy.deepcopy(state["row"]))

    def ready(self) -> int:
        """Number of complete rows waiting."""
        return len(self.full)

    def pop(self, n_rows: int) -> PackedBatch:
        """The first n_rows complete rows as one batch (images renumbered in row-major order)."""
        if n_rows > len(self.full):
            raise ValueError(f"asked for {n_rows} rows but only {len(self.full)} are complete: add more examples")
        rows, self.full = self.full[:n_rows], self.full[n_rows:]
        return _stack(rows)

    def flush(self) -> PackedBatch:
        """Every row, the partial last one padded; the packer is empty afterwards."""
        self._close()
        return self.pop(len(self.full))


def _stack(rows: list[_Row]) -> PackedBatch:
    tokens = torch.stack([torch.cat(r.tokens) for r in rows])
    slot = torch.stack([torch.cat(r.slot) for r in rows])
    # Row-local image slots -> batch image ids: offset by the images of earlier rows.
    offsets = torch.tensor([0] + [len(r.images) for r in rows[:-1]]).cumsum(0)
    image_id = torch.where(slot >= 0, slot + offsets[:, None], slot)
    images = [img for r in rows for img in r.images]
    return PackedBatch(
        tokens=tokens,
        modality=torch.stack([torch.cat(r.modality) for r in rows]),
        image_id=image_id,
        doc_id=torch.stack([torch.cat(r.doc) for r in rows]),
        position=torch.stack([torch.cat(r.position) for r in rows]),
        images=torch.stack(images) if images else torch.zeros(0),
        image_first=torch.tensor([f for r in rows for f in r.image_first], dtype=torch.bool),
    )


def pack(examples: list[list[Segment]], seq_len: int, special: SpecialTokens, elements_per_image: int) -> PackedBatch:
    """Pack a finite list of examples into rows (the last one padded)."""
    packer = Packer(seq_len, special, elements_per_image)
    for ex in examples:
        packer.add(ex)
    return packer.flush()
