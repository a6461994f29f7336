"""The attention mask: one definition for the dense SDPA path and FlexAttention block masks.

Transfusion attends causally over the whole sequence and bidirectionally among the patches of
one image, each image its own block (paper sec 3.2, Figure 4). Documents packed into one row
do not see each other, and padding is seen by no real element. Every query may always see
itself, so that no softmax row is empty (padding, idle decoding slots) and nothing is NaN.
"""

from __future__ import annotations

from typing import Union

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

AttentionMask = Union[torch.Tensor, BlockMask]


def allowed(
    q_idx: torch.Tensor,
    kv_idx: torch.Tensor,
    doc_q: torch.Tensor,
    doc_kv: torch.Tensor,
    img_q: torch.Tensor,
    img_kv: torch.Tensor,
    bidirectional_images: bool,
) -> torch.Tensor:
    """May query element q attend to key element kv? Works on broadcastable tensors (dense
    path) and on the scalar tensors FlexAttention passes to a mask_mod.

    doc_*: document id (-1 padding or an invalid cache slot); img_*: image id (-1 for text).
    """
    visible = (doc_q == doc_kv) & (kv_idx <= q_idx)
    if bidirectional_images:
        visible = visible | ((doc_q == doc_kv) & (img_q == img_kv) & (img_q >= 0))
    return visible | (q_idx == kv_idx)


def dense_mask(doc_id: torch.Tensor, image_id: torch.Tensor, bidirectional_images: bool = True) -> torch.Tensor:
    """Boolean mask [B, 1, L, L] (True = may attend) from per-element doc_id, image_id [B, L]."""
    idx = torch.arange(doc_id.shape[1], device=doc_id.device)
    return allowed(
        idx[:, None], idx[None, :],
        doc_id[:, None, :, None], doc_id[:, None, None, :],
        image_id[:, None, :, None], image_id[:, None, None, :],
        bidirectional_images,
    )


def cached_mask(
    key_doc: torch.Tensor,
    key_img: torch.Tensor,
    n_queries: int,
    bidirectional_images: bool = True,
) -> torch.Tensor:
    """Mask [B, 1, q, K] for the last `q = n_queries` of K keys attending to all K (decoding
    with a KV cache): key_doc, key_img [B, K] describe every key including the new ones."""
    k = key_doc.shape[1]
    kv_idx = torch.arange(k, device=key_doc.device)
    q_idx = kv_idx[k - n_queries:]
    return allowed(
        q_idx[:, None], kv_idx[None, :],
        key_doc[:, None, k - n_queries:, None], key_doc[:, None, None, :],
        key_img[:, None, k - n_queries:, None], key_img[:, None, None, :],
        bidirectional_images,
    )


def block_mask(doc_id: torch.Tensor, image_id: torch.Tensor, bidirectional_images: bool = True) -> BlockMask:
    """FlexAttention BlockMask for rows doc_id, image_id [B, L]: the same `allowed` rule,
    evaluated blockwise so fully-masked blocks (other documents, the causal future) are skipped."""
    batch, length = doc_id.shape

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed(q_idx, kv_idx, doc_id[b, q_idx], doc_id[b, kv_idx],
                       image_id[b, q_idx], image_id[b, kv_idx], bidirectional_images)

    return create_block_mask(mask_mod, batch, None, length, length, device=doc_id.device)


ATTENTION_BACKENDS = ("auto", "sdpa", "flex")


def attention_mask(doc_id: torch.Tensor, image_id: torch.Tensor, bidirectional_images: bool,
                   backend: str = "auto") -> AttentionMask:
    """The training/prefill mask for rows doc_id, image_id [B, L] on the chosen backend:
    "auto" = FlexAttention block masks on CUDA, dense SDPA masks elsewhere."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention={backend!r}: expected one of {ATTENTION_BACKENDS}")
    use_flex = backend == "flex" or (backend == "auto" and doc_id.is_cuda)
    if use_flex and not doc_id.is_cuda and torch.is_grad_enabled():
        raise ValueError("attention='flex' has no backward pass on CPU in torch: "
                         "use attention='sdpa' (or 'auto') to train on CPU")
    return (block_mask if use_flex else dense_mask)(doc_id, image_id, bidirectional_images)
