"""A key/value cache for decoding, one preallocated buffer per layer.

New keys/values are always written at the write pointer `length`; they become part of the
prefix only when the caller `commit`s them. Writing without committing is what the denoising
loop wants: each step overwrites the image's slots in place, and the prefix's keys/values are
computed once (paper sec 3.3: the image is denoised in place, with no attention to earlier
timesteps). Per-slot `doc` (0 valid, -1 invalid) and `img` ids feed the shared mask rule, so
rows of a batch may be at different points of a mixed-modal sequence: a row that sits out a
step writes an invalid slot.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys/values [B, H, capacity, head_dim] per layer, plus per-slot ids and positions."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, capacity: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (batch, n_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.doc = torch.full((batch, capacity), -1, dtype=torch.long, device=device)
        self.img = torch.full((batch, capacity), -1, dtype=torch.long, device=device)
        self.length = 0  # committed slots

    @property
    def capacity(self) -> int:
        return self.doc.shape[1]

    def reserve(self, n: int) -> None:
        """Make room for n slots past the committed length (doubling, so growth is amortised)."""
        need = self.length + n
        if need <= self.capacity:
            return
        grow = max(need, 2 * self.capacity) - self.capacity

        def pad(t: torch.Tensor, dim: int, value: float) -> torch.Tensor:
            extra = list(t.shape)
            extra[dim] = grow
            return torch.cat([t, torch.full(extra, value, dtype=t.dtype, device=t.device)], dim=dim)

        self.k = [pad(t, 2, 0.0) for t in self.k]
        self.v = [pad(t, 2, 0.0) for t in self.v]
        self.doc, self.img = pad(self.doc, 1, -1), pad(self.img, 1, -1)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, q, head_dim] at the write pointer; return all keys/values up to and
        including them, [B, H, length + q, head_dim]."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def set_ids(self, doc: torch.Tensor, img: torch.Tensor) -> None:
        """Describe the q slots about to be written: doc, img [B, q]."""
        self.reserve(doc.shape[1])
        self.doc[:, self.length:self.length + doc.shape[1]] = doc
        self.img[:, self.length:self.length + doc.shape[1]] = img

    def commit(self, n: int) -> None:
        """Make the n slots written last part of the prefix."""
        self.length += n
