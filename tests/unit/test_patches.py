"""Patch encoder/decoder invariants (Transfusion Sec. 3 and the Sec. 4.3 ablation)."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.patches import (
    LinearPatchEncoder,
    PatchConfig,
    build_patch_codec,
    patch_codec_params,
    patchify,
    unpatchify,
)
from model.timestep import timestep_features


def _tiny(kind: str, k: int = 2, C: int = 4, size: int = 16, **kw) -> PatchConfig:
    base = dict(unet_channels=8, timestep_dim=16)
    base.update(kw)
    return PatchConfig(kind=kind, patch_size=k, latent_channels=C, latent_size=size, **base)


def _batch(cfg: PatchConfig, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    return x, torch.randint(0, 1000, (n,), generator=g)


def _count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_patchify_raster_order_and_round_trip():
    # 1 image, 2 channels, 4x6 latent, k = 2: a 2x3 grid of patches.
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (1, 6, 8)
    # Patch 0 is the top-left 2x2 block, channel-major; patch 1 is its right neighbour;
    # patch 3 starts the second patch row.
    assert torch.equal(p[0, 0], x[0, :, 0:2, 0:2].reshape(-1))
    assert torch.equal(p[0, 1], x[0, :, 0:2, 2:4].reshape(-1))
    assert torch.equal(p[0, 3], x[0, :, 2:4, 0:2].reshape(-1))
    assert p[0, 0].tolist() == [0, 1, 6, 7, 24, 25, 30, 31]
    assert torch.equal(unpatchify(p, 2, 2, 4, 6), x)
    y = torch.randn(3, 8, 16, 16)
    for k in (1, 2, 4, 8):
        assert torch.equal(unpatchify(patchify(y, k), k, 8, 16, 16), y)


def test_timestep_features():
    f = timestep_features(torch.tensor([0, 10, 999]), 9)
    assert f.shape == (3, 9) and f.dtype == torch.float32
    assert torch.allclose(f[0, :4], torch.ones(4)) and torch.all(f[:, -1] == 0)
    assert not torch.allclose(f[1], f[2])


@pytest.mark.parametrize("kind", ["linear", "unet"])
def test_shapes_over_patch_sizes_and_channels(kind):
    for k, C in itertools.product((1, 2, 4, 8), (1, 4, 8)):
        cfg = _tiny(kind, k=k, C=C, unet_attention=(k == 8))
        enc, dec = build_patch_codec(cfg, 24)
        x, t = _batch(cfg)
        tokens, skips = enc(x, t)
        assert tokens.shape == (2, cfg.elements_per_image, 24)
        assert cfg.elements_per_image == (16 // k) ** 2 and cfg.patch_dim == C * k * k
        assert dec(tokens, t, skips).shape == x.shape


@pytest.mark.parametrize("kind", ["linear", "unet"])
def test_empty_batch(kind):
    cfg = _tiny(kind, k=4, unet_attention=True)
    enc, dec = build_patch_codec(cfg, 24)
    x, t = _batch(cfg, n=0)
    tokens, skips = enc(x, t)
    assert tokens.shape == (0, 16, 24)
    assert dec(tokens, t, skips).shape == (0, 4, 16, 16)


def test_analytic_param_count_matches_modules():
    kinds, ks, Cs = ("linear", "unet"), (1, 2, 4, 8), (1, 8)
    grid = [_tiny(kind, k=k, C=C) for kind, k, C in itertools.product(kinds, ks, Cs)]
    grid += [
        _tiny("unet", k=4, unet_blocks=2, unet_attention=True, unet_channel_mult=(1, 3)),
        _tiny("unet", k=8, unet_channels=24, unet_attention=True),
    ]
    for cfg in grid:
        assert patch_codec_params(cfg, 40) == _count(*build_patch_codec(cfg, 40)), cfg
    # Paper-scale widths on the meta device: no memory, no data-dependent init.
    big = [PatchConfig(kind=kind, patch_size=k) for kind in ("linear", "unet") for k in (1, 2, 8)]
    big.append(
        PatchConfig(kind="unet", patch_size=4, unet_channels=256, unet_blocks=2, unet_attention=True)
    )
    for cfg, dim in itertools.product(big, (768, 4096)):
        with torch.device("meta"):
            modules = build_patch_codec(cfg, dim)
        assert patch_codec_params(cfg, dim) == _count(*modules), (cfg, dim)


def test_linear_encoder_adds_timestep_embedding_before_the_linear_layer():
    cfg = _tiny("linear")
    enc = LinearPatchEncoder(cfg, 24)
    x, t = _batch(cfg)
    assert not torch.allclose(enc(x, t)[0], enc(x, t + 100)[0])
    with torch.no_grad():
        enc.time_embed.fc2.weight.zero_()
        enc.time_embed.fc2.bias.fill_(0.5)
    # A constant embedding e gives proj(patches + e), not proj(patches) + e.
    expected = enc.proj(patchify(x, 2) + 0.5)
    assert torch.allclose(enc(x, t)[0], expected, atol=1e-6)
    with torch.no_grad():
        enc.time_embed.fc2.bias.zero_()
    assert torch.allclose(enc(x, t)[0], enc.proj(patchify(x, 2)), atol=1e-6)


def test_linear_codec_is_patch_local():
    cfg = _tiny("linear", k=4)
    enc, dec = build_patch_codec(cfg, 24)
    x, t = _batch(cfg)
    x2 = x.clone()
    x2[1, :, 4:8, 8:12] += 1.0  # patch-row 1, patch-column 2 of image 1: patch 6
    diff = (enc(x2, t)[0] - enc(x, t)[0]).abs().sum(-1)
    assert diff[1, 6] > 0
    diff[1, 6] = 0
    assert torch.all(diff == 0)
    h = torch.randn(2, cfg.elements_per_image, 24)
    h2 = h.clone()
    h2[0, 5] += 1.0  # patch 5 = patch-row 1, patch-column 1
    changed = (dec(h2, t, []) - dec(h, t, [])).abs().sum(1) > 0  # [n, H, W]
    expected = torch.zeros_like(changed)
    expected[0, 4:8, 4:8] = True
    assert torch.equal(changed, expected)


def test_unet_decoder_uses_every_skip():
    cfg = _tiny("unet", k=4)
    enc, dec = build_patch_codec(cfg, 24)
    x, t = _batch(cfg)
    tokens, skips = enc(x, t)
    out = dec(tokens, t, skips)
    for i in range(len(skips)):
        bumped = [s + 1.0 if j == i else s for j, s in enumerate(skips)]
        assert not torch.allclose(dec(tokens, t, bumped), out), f"skip {i} unused"
    with pytest.raises(ValueError, match="skips"):
        dec(tokens, t, skips[1:])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(patch_size=3), "patch_size=3"),
        (dict(patch_size=16), "patch_size=16"),
        (dict(latent_size=30, patch_size=4), "latent_size=30"),
        (dict(kind="mlp"), "'mlp'"),
        (dict(kind="unet", patch_size=4, unet_channel_mult=(2,)), "unet_channel_mult"),
        (dict(unet_blocks=0), "unet_blocks"),
    ],
)
def test_validation_errors(overrides, message):
    cfg = PatchConfig(**overrides)
    with pytest.raises(ValueError, match=message):
        cfg.validate()
    with pytest.raises(ValueError, match=message):
        build_patch_codec(cfg, 32)


@pytest.mark.parametrize("kind", ["linear", "unet"])
def test_gradient_reaches_every_parameter(kind):
    cfg = _tiny(kind, k=4, unet_attention=True)
    enc, dec = build_patch_codec(cfg, 24)
    x, t = _batch(cfg)
    tokens, skips = enc(x, t)
    dec(torch.tanh(tokens), t, skips).square().mean().backward()  # tanh: a stand-in middle
    for name, p in itertools.chain(enc.named_parameters(), dec.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
