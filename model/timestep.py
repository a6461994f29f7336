"""Diffusion-timestep embeddings shared by both patch encoder/decoder options.

Transfusion (Sec. 3, "Model Architecture"; ablation in Sec. 4.3) conditions the patch encoder on
the diffusion timestep t of each image: added to every patch vector for the linear option,
added inside every residual block for the U-Net option. Both use the usual sinusoidal features
of t followed by a small MLP (Nichol & Dhariwal 2021, "Improved DDPM"; DiT does the same).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_PERIOD = 10_000.0  # the Transformer / DDPM convention; t ranges over 0..T-1, T = 1000


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer timesteps.

    Args:
        t: [n] integer (or float) diffusion timesteps, one per image.
        dim: feature width; an odd width gets one trailing zero column.
    Returns:
        [n, dim] float32, laid out as [cos(t * f_0..f_{h-1}), sin(t * f_0..f_{h-1})] with
        h = dim // 2 and geometrically spaced frequencies f_i = MAX_PERIOD ** (-i / h).
    """
    half = dim // 2
    # Frequencies are computed in float32 whatever the default dtype: t up to 1000 times a
    # frequency near 1 needs the mantissa, and bf16 would alias neighbouring timesteps.
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(MAX_PERIOD) * i / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        feats = torch.cat([feats, feats.new_zeros(feats.shape[0], 1)], dim=-1)
    return feats


class TimestepEmbedding(nn.Module):
    """timestep_features(t) -> Linear -> SiLU -> Linear: a learned embedding of t.

    Args:
        feature_dim: width of the sinusoidal features.
        hidden_dim: width of the hidden layer.
        out_dim: width of the embedding (C*k*k for the linear codec, 4 * base channels for the
            U-Net, following Nichol & Dhariwal).
    """

    def __init__(self, feature_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.fc1 = nn.Linear(feature_dim, hidden_dim)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: [n] timesteps -> [n, out_dim] in the parameters' dtype."""
        feats = timestep_features(t, self.feature_dim).to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(feats)))


def timestep_embedding_params(feature_dim: int, hidden_dim: int, out_dim: int) -> int:
    """Parameter count of TimestepEmbedding(feature_dim, hidden_dim, out_dim), by arithmetic."""
    return feature_dim * hidden_dim + hidden_dim + hidden_dim * out_dim + out_dim
