"""The shared transformer backbone: Llama-style pre-norm blocks (RMSNorm, SwiGLU, RoPE).

Transfusion and the Chameleon-style baseline use the same blocks (paper sec 4.1); the options
the baseline needs for stability (Chameleon, arXiv 2405.09818, sec 2.3) are switches here:
QK-norm, norm reordering (normalise each sublayer's output inside the residual instead of its
input) and dropout. The z-loss acts on logits and lives in model/losses.py. The backbone maps
input vectors to output vectors; embeddings, heads and patch layers belong to the models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from model.kv_cache import KVCache
from model.masks import AttentionMask
from model.rope import apply_rope
from model.sizes import BackboneConfig  # the shape lives with the named sizes, importable without torch


_compiled_flex = None


def _flex(q, k, v, block_mask):
    # FlexAttention is only fast compiled; compile once, lazily, and only where it is used
    # (CUDA training). Uncompiled it still runs forward on CPU, which the tests use.
    global _compiled_flex
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask)
    return flex_attention(q, k, v, block_mask=block_mask)


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.n_heads, self.head_dim = layer, cfg.n_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask,
                cache: KVCache | None = None) -> torch.Tensor:
        """x [B, L, dim] -> [B, L, dim]. With a cache, keys are the cached prefix + these L."""
        b, n, _ = x.shape
        q, k, v = self.wqkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(self.layer, k, v)
        if isinstance(mask, BlockMask):
            out = _flex(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig, layer: int) -> None:
        super().__init__()
        self.attn, self.ffn = Attention(cfg, layer), FeedForward(cfg)
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.reorder = cfg.norm_reorder
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, cache=None):
        if self.reorder:  # Chameleon: h = x + norm(attn(x)); out = h + norm(ffn(h))
            h = x + self.drop(self.attn_norm(self.attn(x, cos, sin, mask, cache)))
            return h + self.drop(self.ffn_norm(self.ffn(h)))
        h = x + self.drop(self.attn(self.attn_norm(x), cos, sin, mask, cache))
        return h + self.drop(self.ffn(self.ffn_norm(h)))


class Transformer(nn.Module):
    """Blocks + final RMSNorm: inputs [B, L, dim] -> normalised outputs [B, L, dim]."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.apply(self._init)
        # GPT-2 style: scale the projections into the residual stream by depth so its variance
        # does not grow with the number of layers.
        for block in self.blocks:
            for w in (block.attn.wo.weight, block.ffn.w2.weight):
                nn.init.normal_(w, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask,
                cache: KVCache | None = None) -> torch.Tensor:
        """cos, sin from model.rope.rope_angles; mask [B, 1, L, K] bool or a BlockMask, where K
        is L (no cache) or cache.length + L."""
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        return self.norm(x)

    def new_cache(self, batch: int, capacity: int, device, dtype) -> KVCache:
        c = self.cfg
        return KVCache(c.n_layers, batch, c.n_heads, c.head_dim, capacity, device, dtype)
