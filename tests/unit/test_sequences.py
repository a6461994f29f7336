"""Layout and packing of mixed-modal examples (DESIGN.md "Mixed-modal example"; paper sec 3).

Invariants: BOS / text / BOI + P patches + EOI / EOS layout; rows of exactly seq_len; an image
is never split; a caption stays with its image; images numbered in row-major order; documents
restart positions; padding is PAD / doc -1 and not counted in D; next-token targets only
between consecutive text elements of one document.
"""

from __future__ import annotations

import pytest
import torch

from data.sequences import Packer, pack
from model.batch import IMAGE, PAD, TEXT, Image, PackedBatch, Text, layout


# ----------------------------------------------------------------------------- layout


def test_layout_caption_then_image(special, image, elements_per_image):
    P = elements_per_image
    img = image(0)
    lay = layout([Text(torch.tensor([5, 6, 7])), img], special, P)
    assert lay.tokens.tolist() == [special.bos, 5, 6, 7, special.boi] + [special.pad] * P + [special.eoi, special.eos]
    assert lay.modality.tolist() == [TEXT] * 5 + [IMAGE] * P + [TEXT] * 2
    assert lay.image_slot.tolist() == [-1] * 5 + [0] * P + [-1] * 2
    assert len(lay.images) == 1 and torch.equal(lay.images[0], img.data)
    assert lay.image_first == [False]


def test_layout_image_then_caption(special, image, elements_per_image):
    P = elements_per_image
    lay = layout([image(0), Text(torch.tensor([8, 9]))], special, P)
    assert lay.tokens.tolist() == [special.bos, special.boi] + [special.pad] * P + [special.eoi, 8, 9, special.eos]
    assert lay.modality.tolist() == [TEXT] * 2 + [IMAGE] * P + [TEXT] * 4
    assert lay.image_first == [True]


def test_layout_image_alone_is_not_image_first(special, image, elements_per_image):
    # The unconditional example of caption dropout: the noise limit exists for the caption
    # after an image, and an image with no text must train the guidance branch at every t.
    P = elements_per_image
    for segments in ([image(0)], [image(0), Text(torch.tensor([], dtype=torch.long))], [image(0), image(1)]):
        lay = layout(segments, special, P)
        assert lay.image_first == [False] * len(lay.images)
    assert layout([image(0), Text(torch.tensor([8]))], special, P).image_first == [True]


def test_layout_image_first_flags_per_image(special, image, elements_per_image):
    # An empty text segment is no caption: the first image still counts as image-first.
    P = elements_per_image
    lay = layout([Text(torch.tensor([], dtype=torch.long)), image(0), Text(torch.tensor([9])), image(1)], special, P)
    assert lay.image_first == [True, False]
    assert lay.image_slot.tolist() == [-1, -1] + [0] * P + [-1, -1, -1] + [1] * P + [-1, -1]
    assert lay.tokens.shape[0] == 2 * (P + 2) + 3


# ----------------------------------------------------------------------------- packing helpers


def _random_example(g: torch.Generator, text, image, counter: list[int]):
    """A random example: text-only (sometimes long), caption-image, image-caption, or
    interleaved with two images. counter gives fresh seeds so every latent is distinct."""

    def fresh_text(lo: int, hi: int):
        counter[0] += 1
        return text(int(torch.randint(lo, hi, (), generator=g)), counter[0])

    def fresh_image():
        counter[0] += 1
        return image(counter[0])

    kind = int(torch.randint(0, 4, (), generator=g))
    if kind == 0:
        return [fresh_text(1, 120)]
    if kind == 1:
        return [fresh_text(0, 12), fresh_image()]
    if kind == 2:
        return [fresh_image(), fresh_text(1, 12)]
    return [fresh_text(1, 6), fresh_image(), fresh_text(1, 6), fresh_image(), fresh_text(0, 4)]


def _check_rows(batch: PackedBatch, seq_len: int, P: int, special) -> None:
    """Structural invariants of every packed batch."""
    batch.check()
    B = batch.tokens.shape[0]
    assert batch.tokens.shape == (B, seq_len)
    pad = batch.modality == PAD
    # Padding: modality PAD <=> doc -1, pad token, no image, and only at the end of a row.
    assert torch.equal(pad, batch.doc_id == -1)
    assert (batch.tokens[pad] == special.pad).all() and (batch.image_id[pad] == -1).all()
    assert (pad[:, 1:] >= pad[:, :-1]).all()
    assert batch.num_elements == int((~pad).sum())
    for r in range(B):
        docs = batch.doc_id[r][~pad[r]]
        # Document ids 0, 1, 2, ... in order; positions restart at 0 in each document.
        assert docs[0] == 0 and ((docs[1:] - docs[:-1]) >= 0).all() and ((docs[1:] - docs[:-1]) <= 1).all()
        for d in docs.unique().tolist():
            pos = batch.position[r][batch.doc_id[r] == d]
            assert torch.equal(pos, torch.arange(pos.shape[0]))
    # Images: numbered in row-major order, each P contiguous patches in one row between BOI and EOI.
    flat_ids = batch.image_id[batch.modality == IMAGE]
    n = batch.images.shape[0]
    assert torch.equal(flat_ids, torch.arange(n).repeat_interleave(P))
    assert torch.equal(batch.image_id >= 0, batch.modality == IMAGE)
    for i in range(n):
        rows, cols = torch.nonzero(batch.image_id == i, as_tuple=True)
        r = int(rows[0])
        assert (rows == r).all() and torch.equal(cols, torch.arange(int(cols[0]), int(cols[0]) + P))
        first, last = int(cols[0]), int(cols[-1])
        assert first >= 1 and last <= seq_len - 2, "BOI and EOI must sit in the image's row"
        assert batch.tokens[r, first - 1] == special.boi and batch.tokens[r, last + 1] == special.eoi
        assert batch.modality[r, first - 1] == TEXT and batch.modality[r, last + 1] == TEXT
        assert (batch.doc_id[r, first - 1:last + 2] == batch.doc_id[r, first]).all()


def _boundaries(batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets into the stream of non-pad elements (row-major) where a new (row, doc) starts,
    and where a new document starts inside the same row."""
    real = batch.modality != PAD
    row = torch.arange(batch.tokens.shape[0])[:, None].expand_as(batch.tokens)[real]
    doc = batch.doc_id[real]
    new_piece = torch.ones_like(doc, dtype=torch.bool)
    new_piece[1:] = (row[1:] != row[:-1]) | (doc[1:] != doc[:-1])
    new_doc_same_row = torch.zeros_like(new_piece)
    new_doc_same_row[1:] = (row[1:] == row[:-1]) & (doc[1:] != doc[:-1])
    return torch.nonzero(new_piece).flatten(), torch.nonzero(new_doc_same_row).flatten()


# ----------------------------------------------------------------------------- packing


@pytest.mark.parametrize("seed", range(12))
def test_packer_invariants_on_random_streams(seed, special, text, image, elements_per_image):
    P = elements_per_image
    g = torch.Generator().manual_seed(seed)
    seq_len = [P + 4, 29, 40, 64, 100][seed % 5]
    packer = Packer(seq_len, special, P)
    counter = [100 * seed]
    examples = [_random_example(g, text, image, counter) for _ in range(25)]
    for ex in examples:
        packer.add(ex)
    # Pop in chunks (images are renumbered per batch), then flush the rest.
    batches = []
    while packer.ready() >= 3:
        batches.append(packer.pop(3))
    batches.append(packer.flush())
    assert packer.ready() == 0
    for b in batches:
        _check_rows(b, seq_len, P, special)

    # Nothing lost, duplicated or reordered: the non-pad stream is the concatenation of layouts.
    lays = [layout(ex, special, P) for ex in examples]
    stream_tokens = torch.cat([b.tokens[b.modality != PAD] for b in batches])
    stream_modality = torch.cat([b.modality[b.modality != PAD] for b in batches])
    assert torch.equal(stream_tokens, torch.cat([lay.tokens for lay in lays]))
    assert torch.equal(stream_modality, torch.cat([lay.modality for lay in lays]))
    assert sum(b.num_elements for b in batches) == sum(lay.tokens.shape[0] for lay in lays)

    # batch.images[i] is the i-th image added, with its image-first flag.
    latents = [seg.data for ex in examples for seg in ex if isinstance(seg, Image)]
    flags = [f for lay in lays for f in lay.image_first]
    packed = [img for b in batches for img in b.images]
    assert len(packed) == len(latents) and all(torch.equal(a, b) for a, b in zip(packed, latents))
    assert torch.cat([b.image_first for b in batches]).tolist() == flags

    # Each example starts a document; inside a row, documents change only at example starts;
    # an example with an image that fits one row is never cut (caption stays with its image).
    starts = torch.tensor([0] + [lay.tokens.shape[0] for lay in lays]).cumsum(0)
    offset = 0
    piece_starts, same_row_doc_starts = [], []
    for b in batches:
        p, s = _boundaries(b)
        piece_starts.append(p + offset)
        same_row_doc_starts.append(s + offset)
        offset += b.num_elements
    piece_starts = set(torch.cat(piece_starts).tolist())
    same_row_doc_starts = set(torch.cat(same_row_doc_starts).tolist())
    example_starts = set(starts[:-1].tolist())
    assert example_starts <= piece_starts
    assert same_row_doc_starts <= example_starts
    for lay, s in zip(lays, starts.tolist()):
        n = lay.tokens.shape[0]
        if lay.images and n <= seq_len:
            assert not any(s < c < s + n for c in piece_starts)


def test_caption_image_example_that_does_not_fit_starts_new_row(special, text, image, elements_per_image):
    P = elements_per_image
    seq_len = 40
    first = [text(20, 0)]  # 22 elements, leaves 18
    pair = [text(3, 1), image(0)]  # BOS + 3 + BOI + 16 + EOI + EOS = 23 > 18
    batch = pack([first, pair], seq_len, special, P)
    assert batch.tokens.shape == (2, seq_len)
    assert (batch.modality[0, 22:] == PAD).all() and (batch.modality[0, :22] != PAD).all()
    assert batch.tokens[1, :23].tolist() == layout(pair, special, P).tokens.tolist()
    assert (batch.doc_id[1, :23] == 0).all() and (batch.modality[1, 23:] == PAD).all()
    # A text-only example of the same length is split instead, filling the first row.
    other = [text(21, 2)]  # 23 elements
    batch = pack([first, other], seq_len, special, P)
    assert (batch.modality[0] != PAD).all()
    assert batch.doc_id[0].tolist() == [0] * 22 + [1] * 18
    assert batch.doc_id[1, :5].tolist() == [0] * 5 and (batch.modality[1, 5:] == PAD).all()


def test_long_text_document_is_split_across_rows(special, text, elements_per_image):
    seq_len = 40
    doc = [text(100, 0)]  # 102 elements: 40 + 40 + 22
    batch = pack([doc], seq_len, special, elements_per_image)
    assert batch.tokens.shape == (3, seq_len)
    assert torch.equal(batch.tokens[batch.modality != PAD], layout(doc, special, elements_per_image).tokens)
    for r, n in enumerate([40, 40, 22]):
        assert batch.doc_id[r].tolist() == [0] * n + [-1] * (seq_len - n)
        assert batch.position[r, :n].tolist() == list(range(n))
    assert batch.num_elements == 102
    assert batch.images.shape[0] == 0 and batch.image_first.shape == (0,)


def test_long_interleaved_document_never_cuts_an_image(special, text, image, elements_per_image):
    P = elements_per_image
    seq_len = 30
    # BOS + 15 text, then the 18-element image block would straddle the row end (16 + 18 > 30):
    # the row is cut before BOI and the whole block moves to the next row.
    doc = [text(15, 0), image(0), text(2, 1), image(1), text(30, 2)]
    batch = pack([doc], seq_len, special, P)
    _check_rows(batch, seq_len, P, special)
    assert batch.doc_id[0].tolist() == [0] * 16 + [-1] * 14  # BOI stays with its patches
    assert batch.tokens[1, 0] == special.boi and batch.tokens[1, P + 1] == special.eoi


def test_padding_and_element_count(special, text, image, elements_per_image):
    P = elements_per_image
    examples = [[text(4, 0), image(0)], [text(6, 1)], [image(1), text(2, 2)]]
    lays = [layout(ex, special, P) for ex in examples]
    batch = pack(examples, 64, special, P)
    assert batch.num_elements == sum(lay.tokens.shape[0] for lay in lays) == 23 + 8 + 23
    pad = batch.modality == PAD
    assert int(pad.sum()) == batch.tokens.numel() - batch.num_elements
    assert (batch.doc_id[pad] == -1).all() and (batch.doc_id[~pad] >= 0).all()


def test_lm_targets_hand_built(special, image, elements_per_image):
    P = elements_per_image
    s = special
    ex1 = [Text(torch.tensor([5, 6])), image(0), Text(torch.tensor([10]))]  # 23 elements
    ex2 = [Text(torch.tensor([7, 8, 9]))]  # 5 elements
    ex3 = [Text(torch.tensor([11, 12, 13, 14, 15]))]  # 7 elements: 4 end row 0, 3 start row 1
    batch = pack([ex1, ex2, ex3], 32, special, P)
    mask, targets = batch.lm_targets()
    # Row 0: BOS 5 6 BOI [16 patches] EOI 10 EOS | BOS 7 8 9 EOS | BOS 11 12 13
    expected0 = [1, 1, 1, 0] + [0] * P + [1, 1, 0] + [1, 1, 1, 1, 0] + [1, 1, 1, 0]
    # Row 1: 14 15 EOS, padding
    expected1 = [1, 1, 0] + [0] * 29
    assert mask.int().tolist() == [expected0, expected1]
    assert targets[0][mask[0]].tolist() == [5, 6, s.boi, 10, s.eos, 7, 8, 9, s.eos, 11, 12, 13]
    assert targets[1][mask[1]].tolist() == [15, s.eos]
    # Spelled out: BOI (index 3) has no target, EOI (index 4 + P) predicts the caption token,
    # EOS of a document does not predict the next document's BOS, the row's last element has none.
    assert not mask[0, 3] and mask[0, 4 + P] and targets[0, 4 + P] == 10
    assert not mask[0, 6 + P] and not mask[0, -1]


def test_seq_len_too_small_raises(special, elements_per_image):
    P = elements_per_image
    with pytest.raises(ValueError, match="seq_len"):
        Packer(P + 3, special, P)  # an image with BOS, BOI, EOI, EOS does not fit
    Packer(P + 4, special, P)  # exactly fits


def test_image_block_longer_than_seq_len_raises(special, image, elements_per_image):
    P = elements_per_image
    with pytest.raises(ValueError, match="seq_len"):
        pack([[image(0)]], P + 1, special, P)  # BOI + P + EOI = P + 2 > seq_len


def test_image_only_example_fills_minimal_row(special, image, elements_per_image):
    P = elements_per_image
    batch = pack([[image(0)], [image(1)]], P + 4, special, P)
    assert batch.tokens.shape == (2, P + 4) and batch.num_elements == 2 * (P + 4)
    # No caption follows: these are unconditional examples, not noise-limited (issue 11)
    assert batch.image_first.tolist() == [False, False]


def test_pop_more_rows_than_ready_raises(special, text, elements_per_image):
    packer = Packer(40, special, elements_per_image)
    packer.add([text(50, 0)])  # one full row, one partial
    assert packer.ready() == 1
    with pytest.raises(ValueError, match="rows"):
        packer.pop(2)


def _good_batch(special, text, image, P) -> PackedBatch:
    return pack([[text(3, 0), image(0)], [image(1), text(2, 1)]], 64, special, P)


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda b: setattr(b, "doc_id", b.doc_id[:, :-1]), "doc_id"),
        (lambda b: setattr(b, "position", b.position[:, 2:]), "position"),
        (lambda b: setattr(b, "modality", b.modality.flatten()), "modality"),
        (lambda b: setattr(b, "image_first", b.image_first[:1]), "image_first"),
        # one image dropped (with its flag): image_id still refers to it
        (lambda b: (setattr(b, "images", b.images[:1]), setattr(b, "image_first", b.image_first[:1])), "image_id"),
    ],
)
def test_packed_batch_check_catches_inconsistent_shapes(corrupt, field, special, text, image, elements_per_image):
    batch = _good_batch(special, text, image, elements_per_image)
    batch.check()  # consistent as packed
    corrupt(batch)
    with pytest.raises(ValueError, match=field):
        batch.check()
