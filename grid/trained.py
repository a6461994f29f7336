"""A finished (or checkpointed) run, loaded back for evaluation:

    trained = load_trained("results/demo/<run_id>")   # config, family, model (eval mode), data, step, elements
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from data.embedded import EmbeddedData
from grid.checkpoint import CheckpointManager
from grid.config import RunConfig, load_config
from grid.family import family_for
from model.family import Family


@dataclass
class Trained:
    cfg: RunConfig
    family: Family
    model: torch.nn.Module
    data: EmbeddedData
    step: int
    elements: int  # training elements seen at that checkpoint


def load_trained(run_dir: str | Path, checkpoint_dir: str | Path | None = None,
                 device: str | torch.device = "cpu") -> Trained:
    """A run's model at its latest complete checkpoint (the final one for a finished run), in
    eval mode. The checkpoint directory is the one status.json records unless given."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml): pass results/<sweep>/<run_id>")
    cfg = load_config(config)  # a damaged file is a one-line ConfigError naming it
    if checkpoint_dir is None:
        try:
            checkpoint_dir = json.loads((run_dir / "status.json").read_text())["checkpoint_dir"]
        except (OSError, ValueError, KeyError):
            raise FileNotFoundError(f"{run_dir}/status.json names no checkpoint_dir: pass the checkpoint "
                                    "directory of this run explicitly") from None
    latest = CheckpointManager(checkpoint_dir).latest(map_location=device)
    if latest is None:
        raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir}: train the run first "
                                "(python grid/launch.py --sweep NAME)")
    step, state = latest
    data = EmbeddedData(cfg.data.data_dir or None)
    family = family_for(cfg, data)
    model = family.build().to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return Trained(cfg=cfg, family=family, model=model, data=data, step=step, elements=state["elements"])
