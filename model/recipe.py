"""Transfusion's training recipe and the run knobs only it reads, torch-free: the launcher
resolves and hashes run configs with them without importing the model (model/spec.py's
`TransfusionFamily` exports the same objects).

The recipe is the paper's (sec 4.1): peak learning rate 3e-4, no QK-norm, no z-loss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """A family's defaults where a run config leaves None: peak learning rate, QK-norm, z-loss."""

    lr: float
    qk_norm: bool
    z_loss: float


RECIPE = Recipe(lr=3e-4, qk_norm=False, z_loss=0.0)
# Run-config knobs only Transfusion reads: a Chameleon run's id leaves them out.
OWN_KNOBS = ("image_attention", "patch_kind", "patch_size", "unet_channels", "lambda_diffusion", "noise_limit",
             "prediction")
