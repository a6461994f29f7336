"""A tiny Transfusion overfits one toy batch: both losses fall by at least half (issue 2)."""

import pytest

from grid.smoke import overfit


@pytest.mark.slow
def test_tiny_transfusion_overfits_a_toy_batch():
    result = overfit(steps=300, seed=0, verbose=False)
    assert result["lm_last"] <= 0.5 * result["lm_first"], result
    assert result["diffusion_last"] <= 0.5 * result["diffusion_first"], result
