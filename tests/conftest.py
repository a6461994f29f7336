"""Shared small fixtures: special tokens, a tiny Transfusion config and model, example builders.

Everything is sized so that a forward pass takes milliseconds on a 2-core CPU: dim 32, 2 layers,
2 heads, vocabulary 64, latents 4 x 8 x 8 cut into 2 x 2 patches (P = 16 per image).
"""

from __future__ import annotations

import pytest
import torch

from model.backbone import BackboneConfig
from model.batch import Image, SpecialTokens, Text
from model.diffusion import Diffusion, DiffusionConfig
from model.patches import PatchConfig
from model.transfusion import Transfusion, TransfusionConfig
from data.corpora import get_corpus
from data.prepare import Prepare, PrepareConfig

VOCAB = 64
FIRST_ORDINARY_ID = 5  # ids below this are special tokens
LATENT_C, LATENT_HW, PATCH = 4, 8, 2
P = (LATENT_HW // PATCH) ** 2  # 16 patch elements per image


@pytest.fixture
def special() -> SpecialTokens:
    return SpecialTokens(bos=1, eos=2, boi=3, eoi=4, pad=0)


def _tiny_cfg(**overrides) -> TransfusionConfig:
    patch_over = overrides.pop("patch", {})
    backbone_over = overrides.pop("backbone", {})
    diffusion_over = overrides.pop("diffusion", {})
    return TransfusionConfig(
        backbone=BackboneConfig(dim=32, n_layers=2, n_heads=2, **backbone_over),
        patch=PatchConfig(latent_channels=LATENT_C, latent_size=LATENT_HW, patch_size=PATCH, timestep_dim=16,
                          unet_channels=8, **patch_over),
        diffusion=DiffusionConfig(**diffusion_over),
        vocab_size=VOCAB,
        **overrides,
    )


@pytest.fixture
def make_cfg():
    """make_cfg(**overrides) -> a fresh tiny TransfusionConfig; `patch=`, `backbone=`,
    `diffusion=` take dicts of overrides for the sub-configs."""
    return _tiny_cfg


@pytest.fixture
def make_model():
    """make_model(cfg=None, seed=0, **cfg_overrides) -> a Transfusion in eval mode."""

    def build(cfg: TransfusionConfig | None = None, seed: int = 0, **overrides) -> Transfusion:
        torch.manual_seed(seed)
        model = Transfusion(cfg if cfg is not None else _tiny_cfg(**overrides))
        return model.eval()

    return build


@pytest.fixture
def elements_per_image() -> int:
    return P


@pytest.fixture
def diffusion() -> Diffusion:
    return Diffusion(DiffusionConfig())


@pytest.fixture
def text():
    """text(n, seed) -> Text of n ordinary token ids (no special tokens)."""

    def build(n: int, seed: int = 0) -> Text:
        g = torch.Generator().manual_seed(seed)
        return Text(torch.randint(FIRST_ORDINARY_ID, VOCAB, (n,), generator=g))

    return build


@pytest.fixture
def image():
    """image(seed) -> Image with a random latent [C, H, W]."""

    def build(seed: int = 0) -> Image:
        g = torch.Generator().manual_seed(1000 + seed)
        return Image(torch.randn(LATENT_C, LATENT_HW, LATENT_HW, generator=g))

    return build



@pytest.fixture
def full_disk(monkeypatch):
    """Every file data/atomic.py opens fails its writes as on a full disk: OSError ENOSPC, which
    a write reports without a filename."""
    import builtins
    import errno

    from data import atomic

    def no_space(data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, *args, **kwargs):
        f = builtins.open(path, *args, **kwargs)
        f.write = no_space
        return f

    monkeypatch.setattr(atomic, "open", full_open, raising=False)


CORPORA = ("wordnet", "fortunes")
TINY_PREPARE = PrepareConfig(vocab_size=300, corpora=CORPORA, train_images=48, eval_images=16, ae_steps=3, ae_batch=8)


@pytest.fixture
def tiny_prepare() -> PrepareConfig:
    return TINY_PREPARE


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A tiny embedded data set built once per test session: (root, prepare log lines)."""
    for name in CORPORA:
        spec = get_corpus(name)
        if not spec.available():
            pytest.skip(f"needs the Debian package {spec.debian_package} (apt-get install {spec.debian_package})")
    root = tmp_path_factory.mktemp("data")
    lines: list[str] = []
    Prepare(root, TINY_PREPARE, log=lines.append).run()
    return root, lines


def loss_parts(model, diffusion, batch, generator=None):
    """A Transfusion's loss on a batch as the trainer composes it (model/family.py combine):
    .total (the objective), the means .lm, .diffusion, .z and the counts .n_text_targets,
    .n_images."""
    from types import SimpleNamespace

    from model.family import combine
    from model.transfusion import draw_noise, loss_terms, loss_weights

    t = noise = None
    if batch.images.shape[0]:
        t, noise = draw_noise(diffusion, batch.images.float(), batch.image_first, generator)
    terms = loss_terms(model, diffusion, batch, t, noise)
    total, _ = combine(terms, loss_weights(model.cfg))
    means = {k: s * 1 / max(1, n) for k, (s, n) in terms.items()}
    return SimpleNamespace(total=total, **means, n_text_targets=terms["lm"][1], n_images=terms["diffusion"][1])
