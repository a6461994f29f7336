"""What differs between the two families in a run: image representation, model, loss, and
parameter accounting (STYLE 9: share the trainer, vary only this).

    family = Family(cfg, EmbeddedData())
    model = family.build()
    loss, parts = family.loss(model, batch, generator)

    trained = load_trained(run_dir)   # a finished run's config, family, model (eval mode), data
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from baselines.chameleon import Chameleon, chameleon_loss
from baselines.chameleon import param_counts as chameleon_params
from data.embedded import EmbeddedData
from grid.checkpoint import CheckpointManager
from grid.config import RunConfig, build_model_config, from_yaml
from grid.distributed import Dist, global_mean
from model.accounting import param_counts
from model.batch import PackedBatch
from model.diffusion import Diffusion
from model.transfusion import Transfusion, draw_noise, transfusion_loss


class Family:
    """What differs between the two families: image representation, model, loss."""

    def __init__(self, cfg: RunConfig, data: EmbeddedData) -> None:
        self.chameleon = cfg.family == "chameleon"
        self.kind = "vq" if self.chameleon else "kl"
        tok = data.tokenizer
        images = data.encoded(cfg.data.dataset, "val", self.kind)
        codebook = data.autoencoder(cfg.data.dataset, "vq").codebook_size if self.chameleon else None
        self.model_cfg = build_model_config(cfg, tok.vocab_size, tuple(images.shape[1:]), codebook)
        self.elements_per_image = (self.model_cfg.codes_per_image if self.chameleon
                                   else self.model_cfg.patch.num_patches)
        self.diffusion = None if self.chameleon else Diffusion(self.model_cfg.diffusion)

    def build(self) -> torch.nn.Module:
        return Chameleon(self.model_cfg) if self.chameleon else Transfusion(self.model_cfg)

    def accounting(self, elements: int) -> dict:
        """The three N (DESIGN "Element accounting") and 6ND for each, so analysis can switch."""
        counts = (chameleon_params if self.chameleon else param_counts)(self.model_cfg)
        return {**counts, **{f"flops_{k[2:]}": 6 * v * elements for k, v in counts.items()}}

    def loss(self, model, batch: PackedBatch, generator: torch.Generator,
             dist: Dist = Dist()) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to backpropagate, global means to log) for this rank's share of the global
        batch; with one process, the plain losses. Noise is drawn for the whole global batch
        on every rank, so each image gets the same noise whatever the world size."""
        local, images = dist.shard(batch)
        if self.chameleon:
            p = chameleon_loss(model, local)
            n = p.n_text_targets + p.n_image_targets
            w, logged = global_mean(dist, {"lm": (p.lm, n), "z": (p.z, n), "lm_text": (p.lm_text, p.n_text_targets),
                                           "lm_image": (p.lm_image, p.n_image_targets)})
            total = w["lm"] + w["z"]
            logged["loss"] = logged["lm"] + logged["z"]
            return total, logged
        t = noise = None
        if batch.images.shape[0]:
            t, noise = draw_noise(self.diffusion, batch.images.float(), batch.image_first, generator)
            t, noise = t[images], noise[images]
        p = transfusion_loss(model, self.diffusion, local, generator, t, noise)
        w, logged = global_mean(dist, {"lm": (p.lm, p.n_text_targets), "diffusion": (p.diffusion, p.n_images),
                                       "z": (p.z, p.n_text_targets)})
        lam = self.model_cfg.lambda_diffusion
        total = w["lm"] + lam * w["diffusion"] + w["z"]
        logged["loss"] = logged["lm"] + lam * logged["diffusion"] + logged["z"]
        return total, logged


@dataclass
class Trained:
    cfg: RunConfig
    family: Family
    model: torch.nn.Module
    data: EmbeddedData
    step: int


def load_trained(run_dir: str | Path, checkpoint_dir: str | Path | None = None,
                 device: str | torch.device = "cpu") -> Trained:
    """A run's model at its latest complete checkpoint (the final one for a finished run), in
    eval mode. The checkpoint directory is the one status.json records unless given."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml): pass results/<sweep>/<run_id>")
    cfg = from_yaml(config.read_text())
    if checkpoint_dir is None:
        try:
            checkpoint_dir = json.loads((run_dir / "status.json").read_text())["checkpoint_dir"]
        except (OSError, ValueError, KeyError):
            raise FileNotFoundError(f"{run_dir}/status.json names no checkpoint_dir: pass the checkpoint "
                                    "directory of this run explicitly") from None
    latest = CheckpointManager(checkpoint_dir).latest(map_location=device)
    if latest is None:
        raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir}: train the run first "
                                "(python grid/train.py --sweep NAME --run ID)")
    step, state = latest
    data = EmbeddedData(cfg.data.data_dir or None)
    family = Family(cfg, data)
    model = family.build().to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return Trained(cfg=cfg, family=family, model=model, data=data, step=step)
