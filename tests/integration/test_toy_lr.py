"""grid/toy_lr.py's law is what analysis/lr.py fits on the committed results/lr-sweep, so the
toy sweeps' learning rates cannot drift from the runs that set them; and the law is used."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.collect import collect
from analysis.lr import analyse
from grid import toy_lr as T
from grid.sweeps import LR_GRID, LR_SWEEP_SIZES
from model.accounting import backbone_params
from model.sizes import get_size

REPO = Path(__file__).resolve().parents[2]


def test_the_toy_law_is_the_committed_lr_sweeps_shared_fit():
    table, _ = collect([REPO / "results" / "lr-sweep"])
    assert set(table["size"]) >= set(LR_SWEEP_SIZES), "every lr-sweep size has finished runs"
    assert set(table["optim.lr"].astype(float)) >= set(LR_GRID)
    shared = analyse(table)["shared"]
    assert "none" not in shared, shared
    # The law's constants are the fit's, rounded to two figures, as first run (AMD machine: -0.166).
    # The issue-16 rerun on another CPU moved the runs at lr 1e-2..3e-2 by up to 0.08 nats (float
    # rounding grows at the highest rates) and the exponent to -0.159. The law is not refitted
    # (every toy run id would change): it must give, at every size the sweep ran, the fit's
    # learning rate within 5% (the C4 cost of a 5% lr error is far below the seed noise).
    lr_ref, _ = T.law_from_fit(shared["a"], shared["b"])
    assert lr_ref == T.LR_AT_REF, (shared, T.LR_AT_REF)
    for size in LR_SWEEP_SIZES:
        n = backbone_params(get_size(size))
        assert T.toy_lr("transfusion", size) == pytest.approx(shared["a"] * n ** shared["b"], rel=0.05), size


def test_toy_lr_follows_the_law_and_names_bad_families():
    assert T.toy_lr("transfusion", "cpu-0.11M") == T.toy_lr("chameleon", "cpu-0.11M")  # one law for both
    n = 332_448  # cpu-0.33M
    assert T.toy_lr("transfusion", "cpu-0.33M") == pytest.approx(T.LR_AT_REF * (n / T.N_REF) ** T.EXPONENT, rel=0.05)
    with pytest.raises(ValueError, match="'nope'.*transfusion"):
        T.toy_lr("nope", "cpu-0.11M")
