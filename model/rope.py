"""Rotary position embeddings (Su et al. 2021), as in Llama: the paper's backbone (sec 4.1).

Angles are computed from explicit per-element positions [B, L] rather than a fixed table, so
packed rows (positions restart per document) and decoding (positions per row) need no special
cases and no maximum length.
"""

from __future__ import annotations

import torch


def rope_angles(position: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, L, head_dim/2] (float32) for integer positions [B, L]."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=position.device, dtype=torch.float32) / head_dim)
    angles = position.float()[:, None, :, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, head_dim] by the angles; pairs are (first half, second half) of the
    head dimension (the GPT-NeoX layout). Computed in float32, returned in x's dtype."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)
