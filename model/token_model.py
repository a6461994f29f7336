"""What both families share around the backbone: a token embedding, the transformer and an
untied head (as in Llama), plus the public forward over new elements that decoding and
text-only scoring use, with an optional KV cache.

    h = model.decode(x, pos, doc, img, cache)   # x [B, q, dim] -> h [B, q, dim]
    logits = model.head(h)

Transfusion (model/transfusion.py) adds the patch encoder / decoder around it; the Chameleon
baseline (baselines/chameleon.py) spans a joint text + code vocabulary with it.
"""

from __future__ import annotations

import torch
from torch import nn

from model.backbone import BackboneConfig, Transformer
from model.kv_cache import KVCache
from model.masks import cached_mask
from model.rope import rope_angles


class TokenModel(nn.Module):
    """tok_emb [V, dim], backbone, head [dim -> V]. Subclasses say whether elements of one image
    see each other (`bidirectional_images`) and call `_init_token_weights` last, so that the
    initialisation order (hence the initial weights for a seed) is the module order."""

    bidirectional_images: bool = False

    def __init__(self, backbone: BackboneConfig, vocab_size: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, backbone.dim)
        self.backbone = Transformer(backbone)
        self.head = nn.Linear(backbone.dim, vocab_size, bias=False)  # untied

    def _init_token_weights(self) -> None:
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def new_cache(self, batch: int, capacity: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        return self.backbone.new_cache(batch, capacity, device, dtype)

    def decode(self, x: torch.Tensor, pos: torch.Tensor, doc: torch.Tensor, img: torch.Tensor,
               cache: KVCache | None = None) -> torch.Tensor:
        """Backbone outputs [B, q, dim] for new input vectors x [B, q, dim] at RoPE positions pos
        [B, q], with document ids doc (-1: an invalid slot no real element sees) and image ids
        img [B, q] (-1: not an image element). Without a cache x is the whole sequence; with
        one, x follows the cache's committed prefix, its keys are written at the cache's write
        pointer, and the caller commits them (or not: a denoising step)."""
        bb = self.backbone.cfg
        cos, sin = rope_angles(pos, bb.head_dim, bb.rope_theta)
        if cache is None:
            return self.backbone(x, cos, sin, cached_mask(doc, img, x.shape[1], self.bidirectional_images))
        cache.set_ids(doc, img)
        end = cache.length + x.shape[1]
        mask = cached_mask(cache.doc[:, :end], cache.img[:, :end], x.shape[1], self.bidirectional_images)
        return self.backbone(x, cos, sin, mask, cache)
