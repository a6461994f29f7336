"""Image autoencoders (data/autoencoders.py): the KL VAE and VQ-VAE behind one interface.

All tests use a tiny net (16x16 images, 2x downsampling, widths 8/16) on a stand-in for the
shapes world: saturated flat-colour discs and squares on black.
"""

from __future__ import annotations

import json

import pytest
import torch

from data.autoencoder_train import train_autoencoder
from data.autoencoders import (
    AutoencoderConfig,
    ImageAutoencoder,
    build_diffusers_model,
    encode_dataset,
    load,
    main,
    psnr,
)
from data.records import to_uint8, to_unit_range

COLOURS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]],
                       dtype=torch.uint8)


def toy_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, size, size]: 1-3 filled discs or squares of saturated colours on black."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            r = int(torch.randint(2, size // 4 + 1, (1,), generator=g))
            cy, cx = torch.randint(r, size - r, (2,), generator=g).tolist()
            if torch.rand(1, generator=g) < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
            out[i][:, mask] = COLOURS[int(torch.randint(0, len(COLOURS), (1,), generator=g))][:, None]
    return out


def tiny_cfg(kind: str, **over) -> AutoencoderConfig:
    base = dict(kind=kind, image_size=16, latent_channels=4, downsample=2, block_out_channels=(8, 16),
                norm_groups=4, codebook_size=32)
    base.update(over)
    return AutoencoderConfig(**base)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return toy_images(64, seed=0)


@pytest.fixture(scope="module")
def trained(images) -> dict[str, ImageAutoencoder]:
    """A few steps each: enough to move weights, the KL scale and the VQ codebook off init."""
    return {kind: train_autoencoder(tiny_cfg(kind), images, steps=4, batch=8, seed=0) for kind in ("kl", "vq")}


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_encode_decode_shapes_dtypes(trained, images, kind):
    ae = trained[kind]
    x = images[:5]
    z = ae.encode(x)
    if kind == "kl":
        assert ae.latent_shape == (4, 8, 8) and ae.codebook_size is None
        assert z.shape == (5, 4, 8, 8) and z.dtype == torch.float32
    else:
        assert ae.latent_shape == (8, 8) and ae.codebook_size == 32
        assert z.shape == (5, 8, 8) and z.dtype == torch.long
        assert int(z.min()) >= 0 and int(z.max()) < 32
    y = ae.decode(z)
    assert y.shape == (5, 3, 16, 16) and y.dtype == torch.uint8
    # Chunking is an implementation detail: codes and (up to float noise) latents do not depend on it.
    z1 = ae.encode(x, batch_size=2)
    assert torch.equal(z1, z) if kind == "vq" else torch.allclose(z1, z, atol=1e-5)
    assert ae.encode(x[:0]).shape == (0, *ae.latent_shape)
    assert ae.decode(z[:0]).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_save_load_is_bitwise_identical(trained, images, kind, tmp_path):
    ae = trained[kind]
    ae.save(tmp_path / "ae")
    assert (tmp_path / "ae" / "config.json").is_file() and (tmp_path / "ae" / "autoencoder.json").is_file()
    back = load(tmp_path / "ae")
    assert (back.kind, back.image_size, back.latent_shape, back.scale, back.config) == \
           (ae.kind, ae.image_size, ae.latent_shape, ae.scale, ae.config)
    z = ae.encode(images)
    assert torch.equal(back.encode(images), z)
    assert torch.equal(back.decode(z), ae.decode(z))
    # Saving again over the same directory replaces it cleanly (atomic rename of a temp dir).
    back.save(tmp_path / "ae")
    assert torch.equal(load(tmp_path / "ae").encode(images), z)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae"]


def test_our_kl_checkpoint_is_a_plain_diffusers_checkpoint(trained, tmp_path):
    from diffusers import AutoencoderKL

    ae = trained["kl"]
    ae.save(tmp_path / "ae")
    model = AutoencoderKL.from_pretrained(tmp_path / "ae")
    assert model.config.scaling_factor == pytest.approx(ae.scale)


def test_pretrained_kl_checkpoint_loads_through_load(images, tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                          sample_size=16, scaling_factor=0.5, shift_factor=0.25).eval()
    model.save_pretrained(tmp_path / "pipeline" / "vae")  # a pipeline folder keeps its VAE in vae/
    ae = load(tmp_path / "pipeline")
    assert (ae.kind, ae.image_size, ae.latent_shape, ae.scale, ae.shift, ae.config) == \
           ("kl", 16, (4, 8, 8), 0.5, 0.25, None)
    with torch.no_grad():
        mean = model.encode(to_unit_range(images[:4])).latent_dist.mean
        want = to_uint8(model.decode(mean).sample)
    z = ae.encode(images[:4])
    assert torch.equal(z, (mean - 0.25) * 0.5)
    # z / 0.5 + 0.25 gives back the mean up to float rounding, so pixels may differ by one level.
    assert (ae.decode(z).int() - want.int()).abs().max() <= 1
    assert load(tmp_path / "pipeline", image_size=32).latent_shape == (4, 16, 16)


def test_pretrained_vq_checkpoint_matches_diffusers_quantizer(images, tmp_path):
    from diffusers import VQModel

    torch.manual_seed(0)
    model = VQModel(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                    sample_size=16, num_vq_embeddings=64).eval()
    with torch.no_grad():  # spread the codebook so that several codes are in use
        model.quantize.embedding.weight.normal_()
    model.save_pretrained(tmp_path / "vq")
    ae = load(tmp_path / "vq")
    assert (ae.kind, ae.latent_shape, ae.codebook_size) == ("vq", (8, 8), 64)
    with torch.no_grad():
        h = model.encode(to_unit_range(images[:4])).latents
        _, _, (_, _, idx) = model.quantize(h)
        want = to_uint8(model.decode(h).sample)  # diffusers' own quantise-and-decode
    codes = ae.encode(images[:4])
    assert torch.equal(codes.reshape(-1), idx.reshape(-1))
    assert codes.unique().numel() > 1
    assert torch.equal(ae.decode(codes), want)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_training_improves_reconstruction(kind):
    train, held_out = toy_images(256, seed=1), toy_images(32, seed=2)
    torch.manual_seed(0)
    untrained = ImageAutoencoder(build_diffusers_model(tiny_cfg(kind)), kind, 16)
    before = psnr(untrained.decode(untrained.encode(held_out)), held_out)
    ae = train_autoencoder(tiny_cfg(kind), train, steps=60, batch=16, lr=3e-3, seed=0)
    after = psnr(ae.decode(ae.encode(held_out)), held_out)
    # Measured here: about 5-6 dB -> 12 dB. An all-black guess scores 10.2 dB on these images, so
    # the second bound asks for more than the background (a real run goes on to 25+ dB).
    assert after > before + 5.0, (before, after)
    assert after > psnr(torch.zeros_like(held_out), held_out) + 1.0, after
    if kind == "kl":  # latents of training images have about unit variance after scaling
        assert 0.8 < float(ae.encode(train).std()) < 1.25


def test_training_is_deterministic_and_leaves_global_rng_alone(images):
    state = torch.get_rng_state()
    runs = [train_autoencoder(tiny_cfg("vq"), images, steps=3, batch=8, seed=s) for s in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), state)
    a, b, c = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    kl = [train_autoencoder(tiny_cfg("kl"), images, steps=3, batch=8, seed=7) for _ in range(2)]
    assert kl[0].scale == kl[1].scale
    assert torch.equal(kl[0].encode(images), kl[1].encode(images))


def test_training_accepts_an_iterable_of_images(images):
    ae = train_autoencoder(tiny_cfg("kl"), iter(images), steps=100, batch=16, seed=0)  # stops after 4 batches
    assert ae.encode(images[:2]).shape == (2, 4, 8, 8)


def test_encode_dataset(trained, images):
    kl, vq = trained["kl"], trained["vq"]
    assert torch.equal(encode_dataset(kl, images, batch_size=16), kl.encode(images))
    codes = encode_dataset(vq, images, batch_size=16)
    assert codes.dtype == torch.int16 and torch.equal(codes.long(), vq.encode(images))


def test_psnr():
    a = toy_images(3, seed=3)
    assert psnr(a, a) == float("inf")
    b = a.clone()
    b[:, 0, 0, 0] ^= 1  # one channel of one pixel off by one: MSE = 1 / (3 * 16 * 16)
    assert psnr(a, b) == pytest.approx(10 * torch.log10(torch.tensor(255.0 ** 2 * 768)).item())
    with pytest.raises(TypeError):
        psnr(a.float(), b.float())


def test_clear_errors(trained, images, tmp_path):
    kl, vq = trained["kl"], trained["vq"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="supported"):
        load(tmp_path / "other")
    with pytest.raises(ValueError, match="16x16"):
        kl.encode(toy_images(2, size=32))
    with pytest.raises(TypeError, match="uint8"):
        kl.encode(images.float())
    with pytest.raises(TypeError, match="uint8"):
        train_autoencoder(tiny_cfg("kl"), images.float(), steps=1, batch=8)
    with pytest.raises(ValueError, match="16x16"):
        train_autoencoder(tiny_cfg("kl"), toy_images(8, size=32), steps=1, batch=8)
    with pytest.raises(ValueError, match="outside"):
        vq.decode(torch.full((1, 8, 8), 32))
    with pytest.raises(TypeError, match="long"):
        vq.decode(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="decode expects"):
        kl.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="block_out_channels"):
        AutoencoderConfig(downsample=8, block_out_channels=(32, 64, 64))
    with pytest.raises(ValueError, match="kind"):
        AutoencoderConfig(kind="gan")


def test_cli_trains_and_saves(images, tmp_path):
    torch.save(images, tmp_path / "train.pt")
    torch.save({"images": images[:8]}, tmp_path / "val.pt")
    out = tmp_path / "vq_ae"
    assert main(["train", "--kind", "vq", "--images", str(tmp_path / "train.pt"), "--val", str(tmp_path / "val.pt"),
                 "--out", str(out), "--steps", "3", "--batch", "8", "--block-out-channels", "8", "16",
                 "--downsample", "2", "--norm-groups", "4", "--codebook-size", "32"]) == 0
    ae = load(out)
    assert (ae.kind, ae.image_size, ae.latent_shape, ae.codebook_size) == ("vq", 16, (8, 8), 32)
    assert (out / "train_log.jsonl").is_file()
