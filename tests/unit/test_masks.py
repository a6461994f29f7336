"""Mask semantics (paper sec 3.2, Figure 4; DESIGN.md "Contracts"): causal over the row, plus
bidirectional inside each image, nothing across packed documents, padding seen by no real
element. Expected masks are written out by hand, element by element, not derived from the rule.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from data.sequences import pack
from model.batch import PAD
from model.masks import block_mask, cached_mask, dense_mask

FLEX_WARNING = "ignore:flex_attention called without torch.compile"

# Element legend in the comments: T text, B BOI, E EOI, a/b patches of image 0/1, _ padding.


def _mask(doc: list[int], img: list[int], bidirectional: bool = True) -> torch.Tensor:
    """dense_mask of one row as an int [L, L] matrix."""
    m = dense_mask(torch.tensor([doc]), torch.tensor([img]), bidirectional)
    assert m.shape == (1, 1, len(doc), len(doc)) and m.dtype == torch.bool
    return m[0, 0].int()


# Two images in one row:  T  B  a  a  a  E  T  B  b  b  E
TWO_IMAGES_DOC = [0] * 11
TWO_IMAGES_IMG = [-1, -1, 0, 0, 0, -1, -1, -1, 1, 1, -1]
TWO_IMAGES = [
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # T
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # B   (does not see the image it opens)
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # a   (sees all of image 0, forward too)
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # a
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # a
    [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # E
    [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # T
    [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # B
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # b   (image 0 causally, image 1 fully)
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # b
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # E
]

# An image whose patches start the row:  a  a  a  E  T  T
ROW_START_DOC = [0] * 6
ROW_START_IMG = [0, 0, 0, -1, -1, -1]
ROW_START = [
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1],
]

# Two packed documents:  doc 0 = T B a a E,  doc 1 = T T B b b E
TWO_DOCS_DOC = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
TWO_DOCS_IMG = [-1, -1, 0, 0, -1, -1, -1, -1, 1, 1, -1]
TWO_DOCS = [
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # first element of doc 1 sees only itself
    [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
]
TWO_DOCS_CAUSAL = [
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
]

# Padding after one document:  T B a a E T _ _ _
# masks.allowed: padding (doc -1) is its own "document": it sees earlier padding and itself,
# never a real element; no real element sees padding.
PADDED_DOC = [0, 0, 0, 0, 0, 0, -1, -1, -1]
PADDED_IMG = [-1, -1, 0, 0, -1, -1, -1, -1, -1]
PADDED = [
    [1, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 1, 1, 0],
    [0, 0, 0, 0, 0, 0, 1, 1, 1],
]


@pytest.mark.parametrize(
    "doc, img, expected",
    [
        (TWO_IMAGES_DOC, TWO_IMAGES_IMG, TWO_IMAGES),
        (ROW_START_DOC, ROW_START_IMG, ROW_START),
        (TWO_DOCS_DOC, TWO_DOCS_IMG, TWO_DOCS),
        (PADDED_DOC, PADDED_IMG, PADDED),
    ],
    ids=["two_images", "image_at_row_start", "two_documents", "padding"],
)
def test_dense_mask_matches_hand_built(doc, img, expected):
    assert _mask(doc, img).tolist() == expected


def test_causal_image_attention_is_plain_causal_within_document():
    assert _mask(TWO_DOCS_DOC, TWO_DOCS_IMG, bidirectional=False).tolist() == TWO_DOCS_CAUSAL
    # One document: exactly the lower triangle, images or not.
    assert _mask(TWO_IMAGES_DOC, TWO_IMAGES_IMG, bidirectional=False).tolist() == torch.ones(11, 11).tril().int().tolist()
    assert _mask(ROW_START_DOC, ROW_START_IMG, bidirectional=False).tolist() == torch.ones(6, 6).tril().int().tolist()


def test_padding_is_invisible_and_every_row_sees_itself():
    m = _mask(PADDED_DOC, PADDED_IMG).bool()
    pad = torch.tensor(PADDED_DOC) < 0
    assert not m[~pad][:, pad].any()  # real queries never attend to padding keys
    assert not m[pad][:, ~pad].any()  # and padding does not read real elements
    assert m.diagonal().all()  # no empty softmax row anywhere


def test_rows_of_a_batch_are_independent():
    doc = torch.tensor([TWO_IMAGES_DOC, TWO_DOCS_DOC])
    img = torch.tensor([TWO_IMAGES_IMG, TWO_DOCS_IMG])
    m = dense_mask(doc, img).int()
    assert m.shape == (2, 1, 11, 11)
    assert m[0, 0].tolist() == TWO_IMAGES
    assert m[1, 0].tolist() == TWO_DOCS


def _packed_ids(batch: int = 2, length: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with several documents, images of various sizes (one at row start) and padding,
    longer than FlexAttention's 128-element blocks."""
    g = torch.Generator().manual_seed(0)
    docs, imgs = [], []
    next_img = 0
    for b in range(batch):
        doc, img = [], []
        d = 0
        while len(doc) < length - 40:
            if b == 1 and not doc or torch.rand((), generator=g) < 0.5:  # an image block
                n = int(torch.randint(3, 40, (), generator=g))
                img += [next_img] * n
                next_img += 1
            else:
                n = int(torch.randint(1, 30, (), generator=g))
                img += [-1] * n
            doc += [d] * n
            if torch.rand((), generator=g) < 0.3:
                d += 1
        pad = length - len(doc)
        docs.append(doc + [-1] * pad)
        imgs.append(img + [-1] * pad)
    return torch.tensor(docs), torch.tensor(imgs)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("n_queries", [1, 5, 37, 300])
def test_cached_mask_is_last_rows_of_dense_mask(bidirectional, n_queries):
    doc, img = _packed_ids()
    dense = dense_mask(doc, img, bidirectional)
    cached = cached_mask(doc, img, n_queries, bidirectional)
    assert cached.shape == (2, 1, n_queries, 300)
    assert torch.equal(cached, dense[:, :, -n_queries:, :])


@pytest.mark.filterwarnings(FLEX_WARNING)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_flex_attention_equals_sdpa_with_dense_mask(bidirectional):
    doc, img = _packed_ids()
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, 2, 300, 16, generator=g).unbind(0)
    dense = dense_mask(doc, img, bidirectional)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    out = flex_attention(q, k, v, block_mask=block_mask(doc, img, bidirectional))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # The comparison is sensitive to the mask: the other image rule gives different outputs.
    other = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(doc, img, not bidirectional))
    assert (other - ref).abs().max() > 1e-2


@pytest.mark.filterwarnings(FLEX_WARNING)
@pytest.mark.parametrize("image_attention", ["bidirectional", "causal"])
def test_transfusion_forward_flex_equals_sdpa(make_cfg, make_model, special, text, image,
                                              elements_per_image, image_attention):
    examples = [
        [text(7, 0), image(0)],
        [image(1), text(5, 1)],
        [text(60, 2)],  # long enough to be split across rows
        [text(3, 3), image(2), text(4, 4), image(3)],
    ]
    batch = pack(examples, seq_len=48, special=special, elements_per_image=elements_per_image)
    assert (batch.doc_id < 0).any() and batch.images.shape[0] == 4  # padding and images present
    sdpa = make_model(make_cfg(attention="sdpa", image_attention=image_attention))
    flex = make_model(make_cfg(attention="flex", image_attention=image_attention), seed=1)
    flex.load_state_dict(sdpa.state_dict())
    x_t = torch.randn(batch.images.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 400, 999, 0])
    lm_mask = batch.modality != PAD  # logits at every real element, not only the text targets
    with torch.no_grad():
        logits_s, eps_s = sdpa(batch, x_t, t, lm_mask)
        logits_f, eps_f = flex(batch, x_t, t, lm_mask)
    torch.testing.assert_close(logits_f, logits_s, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_f, eps_s, atol=1e-5, rtol=0)
