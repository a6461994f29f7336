"""Latent patches: cutting a VAE latent into transformer inputs and back.

Transfusion (Sec. 3, "Data Representation" and "Model Architecture") cuts a noised latent
[C, H, W] into k x k patches in raster order (left to right, top to bottom), giving
P = (H/k) * (W/k) sequence elements per image. A patch encoder maps them to the transformer
width d and a patch decoder maps the transformer's outputs back to an epsilon prediction.
Two encoder/decoder options, compared in the paper's ablation (Sec. 4.3): a linear layer
(defined here) and U-Net down/up blocks (model/unet.py).

Patch vector layout (our choice): channel-major, i.e. a patch is the block
x[:, :, i*k:(i+1)*k, j*k:(j+1)*k] flattened as (C, k, k), so element c*k*k + a*k + b is
channel c at row a, column b of the block. The linear encoder is then exactly a
Conv2d(C, d, kernel=k, stride=k) with its weight flattened, the usual "patch embedding".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.timestep import TimestepEmbedding, timestep_embedding_params
from model.unet import UNetPatchDecoder, UNetPatchEncoder, unet_codec_params

PATCH_SIZES = (1, 2, 4, 8)  # the paper's ablation range (Sec. 4.3)
KINDS = ("linear", "unet")


def patchify(x: torch.Tensor, k: int) -> torch.Tensor:
    """Cut latents into k x k patches, raster order, channel-major within a patch.

    Args:
        x: [n, C, H, W] latents, H and W divisible by k.
        k: patch side in latent pixels.
    Returns:
        [n, P, C*k*k] with P = (H/k) * (W/k); patch p = r * (W/k) + c is the block at
        patch-row r, patch-column c.
    """
    n, C, H, W = x.shape
    h, w = H // k, W // k
    # Explicit sizes (no -1) so that n = 0 reshapes cleanly.
    x = x.reshape(n, C, h, k, w, k).permute(0, 2, 4, 1, 3, 5)  # [n, h, w, C, k, k]
    return x.reshape(n, h * w, C * k * k)


def unpatchify(p: torch.Tensor, k: int, C: int, H: int, W: int) -> torch.Tensor:
    """Exact inverse of patchify.

    Args:
        p: [n, P, C*k*k] patch vectors in raster order, P = (H/k) * (W/k).
        k, C, H, W: patch side and the latent shape to rebuild.
    Returns:
        [n, C, H, W].
    """
    n = p.shape[0]
    h, w = H // k, W // k
    x = p.reshape(n, h, w, C, k, k).permute(0, 3, 1, 4, 2, 5)  # [n, C, h, k, w, k]
    return x.reshape(n, C, H, W)


@dataclass
class PatchConfig:
    """How images enter and leave the transformer (paper Sec. 3 and the Sec. 4.3 ablation).

    unet_channel_mult has one entry per downsampling stage (log2(patch_size) of them): the
    width after that stage as a multiple of unet_channels. None means doubling per stage,
    capped at 4x as in Nichol & Dhariwal's U-Nets. The paper's U-Net is about 0.27B
    parameters; the defaults here are a small CPU-friendly one.
    """

    kind: str = "linear"  # "linear" | "unet"
    patch_size: int = 2
    latent_channels: int = 8
    latent_size: int = 32  # H = W
    unet_channels: int = 64
    unet_channel_mult: tuple[int, ...] | None = None
    unet_blocks: int = 1  # residual blocks per resolution level
    unet_attention: bool = False  # self-attention blocks at the lowest resolution
    timestep_dim: int = 256  # width of the sinusoidal timestep features

    @property
    def elements_per_image(self) -> int:
        """P: sequence elements per image."""
        return (self.latent_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        """C*k*k: length of one patch vector."""
        return self.latent_channels * self.patch_size**2

    @property
    def num_stages(self) -> int:
        """log2(patch_size): U-Net downsampling stages."""
        return self.patch_size.bit_length() - 1

    @property
    def channel_mult(self) -> tuple[int, ...]:
        """unet_channel_mult resolved: one multiplier per downsampling stage."""
        if self.unet_channel_mult is not None:
            return tuple(self.unet_channel_mult)
        return tuple(min(2 ** (i + 1), 4) for i in range(self.num_stages))

    def validate(self) -> None:
        """Raise ValueError naming the first problem found and how to fix it."""
        if self.kind not in KINDS:
            raise ValueError(f"patch kind {self.kind!r} is unknown; use one of {KINDS}")
        if self.patch_size not in PATCH_SIZES:
            raise ValueError(
                f"patch_size={self.patch_size} is unsupported; use one of {PATCH_SIZES}"
            )
        if self.latent_size < 1 or self.latent_size % self.patch_size:
            raise ValueError(
                f"latent_size={self.latent_size} is not a positive multiple of patch_size="
                f"{self.patch_size}; change one of them so that patch_size divides latent_size"
            )
        positive = ("latent_channels", "unet_channels", "unet_blocks", "timestep_dim")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        mult = self.channel_mult
        if len(mult) != self.num_stages or any(m < 1 for m in mult):
            raise ValueError(
                f"unet_channel_mult={self.unet_channel_mult} needs {self.num_stages} positive "
                f"entries (one per downsampling stage, log2(patch_size={self.patch_size})); "
                "give that many or set it to None for the default"
            )


class LinearPatchEncoder(nn.Module):
    """Linear patch encoder: patches + timestep embedding -> Linear(C*k*k, d).

    The paper (Sec. 3, "Model Architecture") adds an embedding of t to every patch vector
    before the linear layer, so the transformer knows each image's noise level.
    """

    def __init__(self, cfg: PatchConfig, dim: int) -> None:
        super().__init__()
        self.k = cfg.patch_size
        self.time_embed = TimestepEmbedding(cfg.timestep_dim, cfg.timestep_dim, cfg.patch_dim)
        self.proj = nn.Linear(cfg.patch_dim, dim)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x_t: [n, C, H, W] noised latents, t: [n] -> (tokens [n, P, d], skips = [])."""
        patches = patchify(x_t, self.k)
        patches = patches + self.time_embed(t)[:, None, :].to(patches.dtype)
        return self.proj(patches), []


class LinearPatchDecoder(nn.Module):
    """Linear patch decoder: Linear(d, C*k*k) per position, then unpatchify.

    t and skips are accepted for the common interface and unused. The caller applies the
    transformer's final norm first.
    """

    def __init__(self, cfg: PatchConfig, dim: int) -> None:
        super().__init__()
        self.k, self.C, self.size = cfg.patch_size, cfg.latent_channels, cfg.latent_size
        self.proj = nn.Linear(dim, cfg.patch_dim)

    def forward(self, h: torch.Tensor, t: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """h: [n, P, d] transformer outputs at the patch positions -> eps [n, C, H, W]."""
        return unpatchify(self.proj(h), self.k, self.C, self.size, self.size)


def linear_codec_params(cfg: PatchConfig, dim: int) -> int:
    """Parameters of LinearPatchEncoder + LinearPatchDecoder, by arithmetic."""
    q = cfg.patch_dim
    time_embed = timestep_embedding_params(cfg.timestep_dim, cfg.timestep_dim, q)
    return time_embed + (q * dim + dim) + (dim * q + q)


def build_patch_codec(cfg: PatchConfig, dim: int) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) for cfg at transformer width dim.

    encoder(x_t [n, C, H, W], t [n]) -> (tokens [n, P, d], skips: list[Tensor]);
    decoder(h [n, P, d], t [n], skips) -> eps [n, C, H, W].
    """
    cfg.validate()
    if cfg.kind == "linear":
        return LinearPatchEncoder(cfg, dim), LinearPatchDecoder(cfg, dim)
    return UNetPatchEncoder(cfg, dim), UNetPatchDecoder(cfg, dim)


def patch_codec_params(cfg: PatchConfig, dim: int) -> int:
    """Parameters of build_patch_codec(cfg, dim), encoder + decoder, without building it."""
    cfg.validate()
    if cfg.kind == "linear":
        return linear_codec_params(cfg, dim)
    return unet_codec_params(cfg, dim)
