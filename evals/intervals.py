"""Confidence intervals shared by the benchmarks (all at LEVEL = 95%).

Key scheme (evals/harness.py writes it, analysis/tables.py reads it): a metric `<key>` may have
    <key>_lo, <key>_hi       its 95% interval
    <key>_floor_real         what real data scores at the same sample size with the same
                             network (real images against real images): the best a model can reach
    <key>_ref_<name>         what a reference input scores: a chance level (random, black,
                             shuffled, constant, unigram) or a ceiling (true)
so a reader sees at a glance whether a score beats chance.

Two kinds of interval:
- A pass rate (GenEval, caption attributes): the Wilson score interval (Brown, Cai & DasGupta
  2001 recommend it over the normal one at small n; it stays inside [0, 1] at 0 or n passes).
- Anything else (FID, KID, mean NLL, mean MSE): a bootstrap over the evaluated items. Each
  resample is a vector of multinomial counts (how often each item was drawn), so a statistic
  written in terms of counts evaluates every resample with one matrix product instead of a
  Python loop. The interval is the resamples' 2.5-97.5% spread placed around the point
  estimate: [x - (median* - q_2.5*), x + (q_97.5* - median*)], i.e. the percentile interval
  with the bootstrap's own shift removed. The shift matters for FID: drawing with replacement
  duplicates items, which inflates the Frechet distance of every resample (by about its own
  finite-n bias, ~1.5 for two 1,000-image samples of one distribution in 64 features), so
  the plain percentile interval would not even contain the estimate. For unbiased statistics
  (KID, means) the shift is ~0 and this is the percentile interval.
"""

from __future__ import annotations

import math

import torch

LEVEL = 0.95


def _z(level: float) -> float:
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(level, dtype=torch.float64)).item()


def wilson(passed: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a pass rate with `passed` successes out of n (n >= 1)."""
    if n < 1:
        raise ValueError(f"a pass rate needs at least one trial, got n={n}")
    z, p = _z(level), passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    # At 0 or n passes the bound is exactly p; clamping keeps round-off from leaving p outside.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_counts(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k resamples of n items drawn with replacement, as counts: float64 [k, n], rows sum to n."""
    idx = torch.randint(0, n, (k, n), generator=generator)
    return torch.zeros(k, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(k, n, dtype=torch.float64))


def centred_interval(point: float, replicates: torch.Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The replicates' [(1-level)/2, (1+level)/2] spread around `point` (module docstring).
    Undefined replicates (NaN: e.g. KID of a tiny resample holding one distinct item, which has
    no pairs) are left out."""
    a = (1 - level) / 2
    r = replicates.double()
    q = torch.nanquantile(torch.where(r.isfinite(), r, torch.nan), torch.tensor([a, 0.5, 1 - a], dtype=torch.float64))
    lo, med, hi = (float(v) for v in q)
    return point - (med - lo), point + (hi - med)


def ratio_interval(num: torch.Tensor, den: torch.Tensor, k: int, seed: int,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(sum(num) / sum(den), lo, hi) over items with per-item num, den [n] (a mean: den = 1;
    nats per token: den = tokens), bootstrapped over items."""
    num, den = num.double().flatten(), den.double().flatten()
    if num.shape != den.shape or num.numel() == 0:
        raise ValueError(f"need matching non-empty per-item values, got {tuple(num.shape)} and {tuple(den.shape)}")
    point = float(num.sum() / den.sum())
    counts = bootstrap_counts(num.numel(), k, torch.Generator().manual_seed(seed))
    lo, hi = centred_interval(point, (counts @ num) / (counts @ den).clamp(min=1e-300), level)
    return point, lo, hi


def with_interval(key: str, point: float, lo: float, hi: float) -> dict[str, float]:
    """{key: point, key_lo: lo, key_hi: hi} (the key scheme above)."""
    return {key: float(point), f"{key}_lo": float(lo), f"{key}_hi": float(hi)}


def rate_with_interval(key: str, passed: torch.Tensor) -> dict[str, float]:
    """Pass rate of bool [n] with its Wilson interval, under the key scheme."""
    n = int(passed.numel())
    k = float(passed.sum())
    return with_interval(key, k / n, *wilson(k, n))
