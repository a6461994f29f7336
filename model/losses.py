"""Next-token loss with the optional softmax-normaliser penalty (z-loss), as sums.

Chameleon (arXiv 2405.09818, sec 2.3) adds 1e-5 * log^2 Z per token, where Z is the softmax
denominator, to stop logits drifting; both families can switch it on (coefficient 0 = off).
Sums, not means: the mean over a global batch is composed in one place (model/family.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_sums(logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and summed z-loss term over targets.

    logits [n, V] (only the positions that have a target), targets [n] long.
    Returns (ce, z) scalars; z is coefficient * sum(logsumexp(logits)^2), 0 when the
    coefficient is 0; both are 0 (keeping the graph) when n == 0.
    """
    if targets.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, zero
    logits = logits.float()
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if z_loss == 0.0:
        return ce, ce.new_zeros(())
    z = z_loss * torch.logsumexp(logits, dim=-1).pow(2).sum()
    return ce, z
