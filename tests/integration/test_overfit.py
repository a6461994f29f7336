"""A tiny Transfusion overfits one toy batch: both losses fall by at least half (issue 2)."""

import pytest
import torch

from data.sequences import pack
from model.backbone import BackboneConfig
from model.batch import Image, SpecialTokens, Text
from model.family import combine
from model.patches import PatchConfig
from model.spec import TransfusionFamily
from model.transfusion import TransfusionConfig

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)


def _toy_batch(seed: int, cfg: TransfusionConfig, n_examples: int = 8, seq_len: int = 64):
    """Caption/image pairs (caption first, and one image first) packed into rows."""
    g = torch.Generator().manual_seed(seed)
    p = cfg.patch
    examples = []
    for i in range(n_examples):
        text = Text(torch.randint(5, cfg.vocab_size, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g))
        image = Image(torch.randn(p.latent_channels, p.latent_size, p.latent_size, generator=g))
        examples.append([image, text] if i % 5 == 4 else [text, image])
    return pack(examples, seq_len, SPECIAL, p.elements_per_image)


def _overfit(steps: int, seed: int = 0, lr: float = 3e-3) -> dict:
    torch.manual_seed(seed)
    cfg = TransfusionConfig(backbone=BackboneConfig(dim=64, n_layers=2, n_heads=2),
                            patch=PatchConfig(kind="linear", patch_size=2, latent_channels=4, latent_size=8),
                            vocab_size=64)
    family = TransfusionFamily(cfg)
    model, batch = family.build(), _toy_batch(seed, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)

    def losses(gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        return combine(family.loss_terms(model, batch, family.draw(batch, gen)), family.weights)

    def evaluate() -> dict:  # a fixed draw of timesteps and noise, so the curve is not timestep noise
        with torch.no_grad():
            return losses(torch.Generator().manual_seed(1234))[1]

    first, gen = evaluate(), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = losses(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return {"first": first, "last": evaluate()}


@pytest.mark.slow
def test_tiny_transfusion_overfits_a_toy_batch():
    result = _overfit(steps=300)
    for term in ("lm", "diffusion"):
        assert result["last"][term] <= 0.5 * result["first"][term], result
