"""The toy sweeps' peak learning rate per family and size, tuned at toy scale (issue 14) rather
than copied from the paper's 7B recipe (Transfusion 3e-4, Chameleon 1e-4, which the `paper`
sweep keeps):

    toy_lr("chameleon", "cpu-0.11M")   # a float, two significant figures

The rule is one power law in non-embedding N for both families, lr*(N) = LR_AT_REF *
(N / N_REF)^EXPONENT, fitted by analysis/lr.py ("shared") on results/lr-sweep: per family and
size the held-out C4 loss (text_c4/lm, the one metric both families share) over the learning-
rate grid, its minimum interpolated by a parabola in log10(lr), and the interior minima of both
families fitted together in log-log (Porian et al. 2024 fit lr against N the same way). One law
for both keeps the learning rate fixed in every comparison of families; analysis/lr.py prints
what sharing costs each family against its own optimum. Sizes in between and beyond follow the
law. Values are rounded to two significant figures, so a refit that moves them by less does
not change any run id; tests/integration/test_toy_lr.py refits from the committed
results/lr-sweep and checks the constants, so they cannot drift from the runs that set them.

What results/lr-sweep measured (held-out C4 loss, nats per token, 20 elements per parameter, one
seed; the best rate interpolated, "edge" where the grid's end was best):

    size        N        Transfusion best lr   Chameleon best lr   shared law   worst cost of sharing
    cpu-0.027M  26,784   0.011                 0.0100              0.0085       0.016 (T)
    cpu-0.056M  55,536   0.0072                0.0046              0.0075       0.061 (C)
    cpu-0.11M   106,816  >= 0.03 (edge)        0.0057              0.0067       ~0.06 (T, a bound)
    cpu-0.33M   332,448  0.0089                0.0045              0.0055       0.010 (T)

The last column is the C4 loss at the shared rate minus at the family's own optimum, read off
the same parabola (analysis/lr.py); it is the price of holding the rate fixed across families,
and at most 0.06 nats, of the order of one neighbouring grid point (a factor 3 in lr moves the
loss by 0.01-0.11 nats around the optima).
"""

from __future__ import annotations

from grid.family import FAMILIES
from model.accounting import backbone_params
from model.sizes import get_size

N_REF = 1e5
FIT_METRIC = "text_c4/lm"
LR_AT_REF, EXPONENT = 0.0068, -0.17  # results/lr-sweep: 7 interior optima over 4 sizes x 2 families (2026-12-02)


def round2(x: float) -> float:
    """x to two significant figures."""
    return float(f"{x:.2g}")


def law_from_fit(a: float, b: float) -> tuple[float, float]:
    """analysis/lr.py's lr = a * N^b as (lr at N_REF, b), both to two significant figures."""
    return round2(a * N_REF ** b), round2(b)


def toy_lr(family: str, size: str) -> float:
    """The peak learning rate of a toy run of this family and size."""
    if family not in FAMILIES:
        raise ValueError(f"no toy learning rate for family {family!r}; valid: {', '.join(FAMILIES)}")
    return round2(LR_AT_REF * (backbone_params(get_size(size)) / N_REF) ** EXPONENT)
