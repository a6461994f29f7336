"""Named backbone sizes, defined once: the paper's five and a CPU ladder (STYLE principle 4).

A size fixes only the transformer's shape (layers, width, heads, SwiGLU hidden). Everything a
run varies on top of it (QK-norm, norm reordering, dropout, vocabulary, patch layers) is set
by the run with `dataclasses.replace`; `get_size` hands out a fresh copy each call so that
doing so never edits this table.

Paper sizes (Transfusion sec 4.1, layers/dim/heads), SwiGLU hidden = 8/3*dim rounded up to a
multiple of 256 as in Llama. The labels are totals *including* an untied 32k-vocabulary
token embedding and output head (checked by tests/unit/test_accounting.py, within 10%):

    label   L/dim/heads   hidden   N non-emb        + 2*32000*dim     label / total
    0.16B   16/768/12     2048     113,271,552      162,423,552       0.99
    0.37B   24/1024/16    2816     308,331,520      373,867,520       0.99
    0.76B   24/1536/24    4096     679,552,512      777,856,512       0.98
    1.4B    24/2048/16    5632     1,233,225,728    1,364,297,728     1.03
    7B      32/4096/32    11008    6,476,271,616    6,738,415,616     1.04

So scaling fits that use non-embedding N (our 6ND default, DESIGN "Element accounting") see
N about 30% below the label at 0.16B and 7% below at 7B.

CPU ladder (ffn_multiple_of 32, head_dim even): each size is named after its non-embedding
parameter count N (model.accounting.backbone_params) to two significant figures, so the name
says what a scaling plot's x-axis will say. Calibration (DESIGN "Calibration for CPU
budgets", vocab 4096, seq 256, batch 16, 2 cores): ~27k elements/s at 0.1M down to ~2k/s at
14M, so the small end is for the 15-minute demo and the top for the hour-scale toy sweep.

    name        L/dim/heads   head_dim   hidden   N non-emb
    cpu-0.027M  2/32/1        32         96       26,784
    cpu-0.056M  2/48/2        24         128      55,536
    cpu-0.11M   2/64/2        32         192      106,816
    cpu-0.33M   3/96/3        32         256      332,448
    cpu-0.8M    4/128/4       32         352      803,968
    cpu-2.7M    6/192/4       48         512      2,656,704
    cpu-6.4M    8/256/4       64         704      6,426,880
    cpu-14M     8/384/6       64         1024     14,162,304
    cpu-20M     8/448/7       64         1216     19,504,576
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class BackboneConfig:
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_multiple_of: int = 32  # SwiGLU hidden size: 8/3 * dim rounded up to this (Llama)
    ffn_hidden: int | None = None  # explicit hidden size, overrides the rule above
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    qk_norm: bool = False
    norm_reorder: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        m = self.ffn_multiple_of
        return m * ((8 * self.dim // 3 + m - 1) // m)

    def validate(self) -> None:
        if self.dim <= 0 or self.n_layers <= 0 or self.n_heads <= 0:
            raise ValueError(f"dim, n_layers and n_heads must be positive, got {self.dim}/{self.n_layers}/{self.n_heads}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}: "
                             f"choose n_heads dividing dim (e.g. {self.dim // 64 or 1})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = dim/n_heads = {self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _paper(n_layers: int, dim: int, n_heads: int, ffn_hidden: int | None = None) -> BackboneConfig:
    return BackboneConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, ffn_multiple_of=256, ffn_hidden=ffn_hidden)


def _cpu(n_layers: int, dim: int, n_heads: int) -> BackboneConfig:
    return BackboneConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, ffn_multiple_of=32)


PAPER_SIZES: dict[str, BackboneConfig] = {
    "0.16B": _paper(16, 768, 12),
    "0.37B": _paper(24, 1024, 16),
    "0.76B": _paper(24, 1536, 24),
    "1.4B": _paper(24, 2048, 16),
    # Llama-2 7B's hidden size, given explicitly; the 256-rounding rule also yields 11008.
    "7B": _paper(32, 4096, 32, ffn_hidden=11008),
}

CPU_SIZES: dict[str, BackboneConfig] = {
    # The two smallest keep the demo in its 15 minutes at 5-50 elements per parameter (issue 14);
    # below ~0.1M the untied 2,048-id embedding and head hold more parameters than the backbone.
    "cpu-0.027M": _cpu(2, 32, 1),
    "cpu-0.056M": _cpu(2, 48, 2),
    "cpu-0.11M": _cpu(2, 64, 2),
    "cpu-0.33M": _cpu(3, 96, 3),
    "cpu-0.8M": _cpu(4, 128, 4),
    "cpu-2.7M": _cpu(6, 192, 4),
    "cpu-6.4M": _cpu(8, 256, 4),
    "cpu-14M": _cpu(8, 384, 6),
    "cpu-20M": _cpu(8, 448, 7),
}

SIZES: dict[str, BackboneConfig] = {**CPU_SIZES, **PAPER_SIZES}


def get_size(name: str) -> BackboneConfig:
    """A fresh BackboneConfig for a named size; ValueError listing the valid names otherwise."""
    if name not in SIZES:
        raise ValueError(f"unknown size {name!r}; valid sizes: {', '.join(SIZES)}")
    return dataclasses.replace(SIZES[name])
