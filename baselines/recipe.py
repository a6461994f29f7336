"""The Chameleon baseline's training recipe, torch-free (baselines/spec.py's `ChameleonFamily`
exports it): Chameleon's stability recipe (arXiv 2405.09818, sec 2.3; Transfusion sec 4.1
trains its baseline with it): peak learning rate 1e-4, QK-norm on, z-loss 1e-5. It reads no
knob of its own."""

from __future__ import annotations

from model.recipe import Recipe

RECIPE = Recipe(lr=1e-4, qk_norm=True, z_loss=1e-5)
OWN_KNOBS: tuple[str, ...] = ()
