"""U-Net down/up blocks as Transfusion's patch encoder and decoder.

Transfusion's second option (Sec. 3, "Model Architecture"; ablation Sec. 4.3) replaces the
linear patch layer by the down and up blocks of a Nichol & Dhariwal (2021) U-Net: the
transformer takes the place of the U-Net's middle block. The paper swaps AdaLayerNorm for a
plain norm and does not say how t enters (paper-notes (?)); we use GroupNorm (the U-Net's own
norm) and add a projection of the timestep embedding inside every residual block, as
Nichol & Dhariwal do without scale-shift norm.

Layout for patch size k = 2**S: conv_in at full resolution, then S + 1 resolution levels of
`unet_blocks` residual blocks, a stride-2 downsample between levels, and a 1x1 projection to
the transformer width d at resolution H/k, flattened in raster order to P tokens. Every
encoder step's output is kept as a skip; the decoder mirrors the encoder (unet_blocks + 1
blocks per level, each concatenating one skip, nearest-neighbour upsampling between levels)
and ends with GroupNorm -> SiLU -> conv to C channels. The encoder and decoder each own a
timestep MLP, so they stay independent modules with disjoint parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.timestep import TimestepEmbedding, timestep_embedding_params

if TYPE_CHECKING:  # patches.py imports this file; the config type is only a hint here
    from model.patches import PatchConfig

HEAD_CHANNELS = 64  # Nichol & Dhariwal's channels per attention head


def _groups(channels: int) -> int:
    # 32 groups as in Nichol & Dhariwal where the width allows it; tiny CPU widths (e.g. 8, 24)
    # fall back to the largest divisor of 32 that divides the width.
    return math.gcd(32, channels)


class ResBlock(nn.Module):
    """Residual block: GN -> SiLU -> conv3x3, + Linear(SiLU(emb)), GN -> SiLU -> conv3x3.

    x: [n, c_in, h, w], emb: [n, emb_dim] -> [n, c_out, h, w]; a 1x1 conv matches widths on the
    residual path when c_in != c_out.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Residual self-attention over the h*w positions of a feature map: [n, c, h, w] -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = channels // HEAD_CHANNELS if channels % HEAD_CHANNELS == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x).reshape(n, c, h * w).transpose(1, 2)  # [n, hw, c]
        qkv = self.qkv(y).reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [n, heads, hw, c/heads]
        y = self.proj(y.transpose(1, 2).reshape(n, h * w, c))
        return x + y.transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [n, c, h, w] -> [n, c, h/2, w/2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv: [n, c, h, w] -> [n, c, 2h, 2w]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class _Step:
    """One encoder step (emits a skip) or decoder step (consumes one, concatenated first)."""

    c_in: int
    c_out: int
    attn: bool = False  # self-attention after the residual block
    down: bool = False  # a lone Downsample instead of a residual block
    up: bool = False  # an Upsample after the residual block


def _level_widths(cfg: PatchConfig) -> list[int]:
    """Channel width at each resolution level, full resolution first."""
    return [cfg.unet_channels] + [cfg.unet_channels * m for m in cfg.channel_mult]


def _encoder_plan(cfg: PatchConfig) -> tuple[list[_Step], list[int]]:
    """Encoder steps and the channel width of every skip it returns (conv_in's first)."""
    widths, steps = _level_widths(cfg), []
    ch = widths[0]
    skip_chs = [ch]
    for level, width in enumerate(widths):
        if level > 0:
            steps.append(_Step(ch, ch, down=True))
            skip_chs.append(ch)
        for _ in range(cfg.unet_blocks):
            attn = cfg.unet_attention and level == len(widths) - 1
            steps.append(_Step(ch, width, attn=attn))
            ch = width
            skip_chs.append(ch)
    return steps, skip_chs


def _decoder_plan(cfg: PatchConfig) -> list[_Step]:
    """Decoder steps; step i consumes the encoder's skips in reverse (last skip first)."""
    widths = _level_widths(cfg)
    skip_chs = _encoder_plan(cfg)[1]
    steps, ch = [], widths[-1]
    for level in reversed(range(len(widths))):
        for j in range(cfg.unet_blocks + 1):
            attn = cfg.unet_attention and level == len(widths) - 1
            up = level > 0 and j == cfg.unet_blocks
            steps.append(_Step(ch + skip_chs.pop(), widths[level], attn=attn, up=up))
            ch = widths[level]
    return steps


class _StepModule(nn.Module):
    """The layers of one _Step, run in order; residual blocks also take the t embedding."""

    def __init__(self, step: _Step, emb_dim: int) -> None:
        super().__init__()
        if step.down:
            layers: list[nn.Module] = [Downsample(step.c_in)]
        else:
            layers = [ResBlock(step.c_in, step.c_out, emb_dim)]
            layers += [AttentionBlock(step.c_out)] if step.attn else []
            layers += [Upsample(step.c_out)] if step.up else []
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _emb_dim(cfg: PatchConfig) -> int:
    return 4 * cfg.unet_channels  # Nichol & Dhariwal's time-embedding width


class UNetPatchEncoder(nn.Module):
    """U-Net down blocks: (x_t [n, C, H, W], t [n]) -> (tokens [n, P, d], skips).

    skips are the outputs of conv_in and of every step, full resolution first; the decoder
    consumes them in reverse.
    """

    def __init__(self, cfg: PatchConfig, dim: int) -> None:
        super().__init__()
        e, steps = _emb_dim(cfg), _encoder_plan(cfg)[0]
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, e, e)
        self.conv_in = nn.Conv2d(cfg.latent_channels, cfg.unet_channels, 3, padding=1)
        self.steps = nn.ModuleList(_StepModule(s, e) for s in steps)
        self.proj_out = nn.Conv2d(_level_widths(cfg)[-1], dim, 1)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        emb = self.time_embed(t)
        h = self.conv_in(x_t)
        skips = [h]
        for step in self.steps:
            h = step(h, emb)
            skips.append(h)
        tokens = self.proj_out(h)  # [n, d, H/k, W/k]
        n, d, gh, gw = tokens.shape
        return tokens.reshape(n, d, gh * gw).transpose(1, 2), skips  # raster order


class UNetPatchDecoder(nn.Module):
    """U-Net up blocks: (h [n, P, d], t [n], skips from the encoder) -> eps [n, C, H, W].

    The patch grid (H/k, W/k) is read off the encoder's last skip, so any H, W divisible by k
    works. The caller applies the transformer's final norm to h first.
    """

    def __init__(self, cfg: PatchConfig, dim: int) -> None:
        super().__init__()
        e, steps = _emb_dim(cfg), _decoder_plan(cfg)
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, e, e)
        self.proj_in = nn.Conv2d(dim, _level_widths(cfg)[-1], 1)
        self.steps = nn.ModuleList(_StepModule(s, e) for s in steps)
        self.norm_out = nn.GroupNorm(_groups(cfg.unet_channels), cfg.unet_channels)
        self.conv_out = nn.Conv2d(cfg.unet_channels, cfg.latent_channels, 3, padding=1)

    def forward(self, h: torch.Tensor, t: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if len(skips) != len(self.steps):
            raise ValueError(
                f"UNetPatchDecoder needs the {len(self.steps)} skips its encoder returned, got "
                f"{len(skips)}; pass the encoder's skips unchanged"
            )
        n, _, d = h.shape
        gh, gw = skips[-1].shape[-2:]
        x = self.proj_in(h.transpose(1, 2).reshape(n, d, gh, gw))
        emb = self.time_embed(t)
        for step, skip in zip(self.steps, reversed(skips)):
            x = step(torch.cat([x, skip], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(x)))


def _conv(c_in: int, c_out: int, kernel: int) -> int:
    return c_in * c_out * kernel * kernel + c_out


def _step_params(s: _Step, emb_dim: int) -> int:
    if s.down:
        return _conv(s.c_in, s.c_in, 3)
    i, o = s.c_in, s.c_out
    res = 2 * i + _conv(i, o, 3) + (emb_dim * o + o) + 2 * o + _conv(o, o, 3)
    res += _conv(i, o, 1) if i != o else 0
    attn = (2 * o + (o * 3 * o + 3 * o) + (o * o + o)) if s.attn else 0
    up = _conv(o, o, 3) if s.up else 0
    return res + attn + up


def unet_codec_params(cfg: PatchConfig, dim: int) -> int:
    """Parameters of UNetPatchEncoder + UNetPatchDecoder, by arithmetic over the same plan."""
    e, c, C = _emb_dim(cfg), cfg.unet_channels, cfg.latent_channels
    c_low = _level_widths(cfg)[-1]
    time_embed = timestep_embedding_params(cfg.timestep_dim, e, e)
    enc = time_embed + _conv(C, c, 3) + _conv(c_low, dim, 1)
    enc += sum(_step_params(s, e) for s in _encoder_plan(cfg)[0])
    dec = time_embed + _conv(dim, c_low, 1) + 2 * c + _conv(c, C, 3)
    dec += sum(_step_params(s, e) for s in _decoder_plan(cfg))
    return enc + dec
