"""Smoke run: a tiny Transfusion overfits one fixed toy batch on CPU.

    python -m grid.smoke [--steps 300] [--seed 0]

It packs a few caption/image examples (random token ids, random latents), trains with AdamW,
prints the LM and diffusion losses as JSON lines, and exits non-zero unless both fell by at
least half (issue 2's acceptance check). The launcher (grid/launch.py) supersedes it as the
main job once it exists.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from data.sequences import pack
from model.backbone import BackboneConfig
from model.batch import Image, SpecialTokens, Text
from model.diffusion import Diffusion
from model.patches import PatchConfig
from model.transfusion import Transfusion, TransfusionConfig, transfusion_loss

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)


def toy_batch(seed: int, cfg: TransfusionConfig, n_examples: int = 8, seq_len: int = 64):
    """Caption/image pairs (caption first, and one image first) packed into rows."""
    g = torch.Generator().manual_seed(seed)
    p = cfg.patch
    examples = []
    for i in range(n_examples):
        text = Text(torch.randint(5, cfg.vocab_size, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g))
        image = Image(torch.randn(p.latent_channels, p.latent_size, p.latent_size, generator=g))
        examples.append([image, text] if i % 5 == 4 else [text, image])
    return pack(examples, seq_len, SPECIAL, p.num_patches)


def overfit(steps: int = 300, seed: int = 0, lr: float = 3e-3, log_every: int = 25, verbose: bool = True) -> dict:
    """Train a tiny model on one batch; return first/last LM and diffusion losses."""
    torch.manual_seed(seed)
    cfg = TransfusionConfig(
        backbone=BackboneConfig(dim=64, n_layers=2, n_heads=2),
        patch=PatchConfig(kind="linear", patch_size=2, latent_channels=4, latent_size=8),
        vocab_size=64,
    )
    model, diffusion = Transfusion(cfg), Diffusion(cfg.diffusion)
    batch = toy_batch(seed, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    # A fixed evaluation draw of timesteps and noise, so the curve is not timestep noise.
    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            parts = transfusion_loss(model, diffusion, batch, torch.Generator().manual_seed(1234))
        return float(parts.lm), float(parts.diffusion)

    first = evaluate()
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(1, steps + 1):
        parts = transfusion_loss(model, diffusion, batch, gen)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if verbose and (step % log_every == 0 or step == steps):
            lm, diff = evaluate()
            print(json.dumps({"step": step, "lm": round(lm, 4), "diffusion": round(diff, 4),
                              "seconds": round(time.time() - start, 1)}), flush=True)
    last = evaluate()
    return {"lm_first": first[0], "lm_last": last[0], "diffusion_first": first[1], "diffusion_last": last[1],
            "elements_per_batch": batch.num_elements}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = overfit(args.steps, args.seed)
    ok = result["lm_last"] <= 0.5 * result["lm_first"] and result["diffusion_last"] <= 0.5 * result["diffusion_first"]
    print(json.dumps({**{k: round(v, 4) for k, v in result.items()}, "halved": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
