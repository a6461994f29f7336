"""FID and KID between two feature sets, with bootstrap intervals, vectorised over resamples.

FID (Heusel et al. 2017): ||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of the features'
means and covariances. KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD
with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3. KID has no bias at small n, which
is why it sits beside FID: FID's finite-sample bias (it grows as the sample shrinks) means two
FIDs are comparable only at one sample size, and the reference floors (evals/floors.py) are
computed at that size. Both equal torchmetrics' values on the full sets (FrechetInceptionDistance,
and KernelInceptionDistance with one subset of all samples; tests/integration/test_evals_metrics.py).

Every resample is a count vector c (evals/intervals.py), so
- FID: weighted mean C X / m and covariance from C @ (x x^T) (one product over all resamples);
  tr (S_r S_f)^(1/2) = sum sqrt(eig(R S_f R)) with R = S_r^(1/2), by batched eigh in float64;
- KID: from Gram matrices computed once, sum_{i != j} k(x_i, x_j) over a resample is
  c^T K c - sum c_i^2 K_ii: pairs of copies of one item are left out, as the unbiased estimate
  leaves out i = j, so resampled KID stays unbiased.
Gram and outer-product blocks of BLOCK rows keep memory bounded at the cluster's 30k images.
"""

from __future__ import annotations

import torch

from evals.intervals import bootstrap_counts, centred_interval, with_interval

BLOCK = 2048  # rows per Gram / outer-product block


def _ones(n: int) -> torch.Tensor:
    return torch.ones(1, n, dtype=torch.float64)


def _moments(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted means [k, d] and unbiased covariances [k, d, d] of features x [n, d] under
    count vectors w [k, n] (each row sums to the resample size m)."""
    n, d = x.shape
    m = w.sum(1)
    mu = (w @ x) / m[:, None]
    second = torch.zeros(w.shape[0], d * d, dtype=torch.float64)
    for s in range(0, n, BLOCK):  # blocks of items, not items
        xb = x[s:s + BLOCK]
        second += w[:, s:s + BLOCK] @ (xb[:, :, None] * xb[:, None, :]).reshape(xb.shape[0], d * d)
    second = second.reshape(-1, d, d)
    cov = (second - m[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (m - 1)[:, None, None]
    return mu, cov


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square roots [k, d, d] of PSD matrices [k, d, d] (negative round-off clipped)."""
    e, v = torch.linalg.eigh(s)
    return (v * e.clamp(min=0).sqrt()[:, None, :]) @ v.transpose(-1, -2)


def frechet_distance(x: torch.Tensor, y: torch.Tensor, wx: torch.Tensor | None = None,
                     wy: torch.Tensor | None = None) -> torch.Tensor:
    """FID [k] between features x [n, d] and y [m, d] under count vectors wx [k, n], wy [k, m]
    (None: every item once, k = 1)."""
    x, y = x.double(), y.double()
    wx = _ones(x.shape[0]) if wx is None else wx
    wy = _ones(y.shape[0]) if wy is None else wy
    mu1, s1 = _moments(x, wx)
    mu2, s2 = _moments(y, wy)
    r = _sqrtm_psd(s1)
    # R S2 R is symmetric PSD with the eigenvalues of S1 S2, so eigvalsh is exact and stable.
    tr_sqrt = torch.linalg.eigvalsh(r @ s2 @ r).clamp(min=0).sqrt().sum(-1)
    trace = s1.diagonal(dim1=-2, dim2=-1).sum(-1) + s2.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (mu1 - mu2).pow(2).sum(-1) + trace - 2 * tr_sqrt


def _kernel_sums(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """sum_ij wa[:, i] k(a_i, b_j) wb[:, j] for every resample: [k], Gram blocks on the fly."""
    d = a.shape[1]
    out = torch.zeros(wa.shape[0], dtype=torch.float64)
    for s in range(0, a.shape[0], BLOCK):
        for t in range(0, b.shape[0], BLOCK):
            gram = (a[s:s + BLOCK] @ b[t:t + BLOCK].T / d + 1).pow(3)
            out += ((wa[:, s:s + BLOCK] @ gram) * wb[:, t:t + BLOCK]).sum(1)
    return out


def _self_term(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of k(x_i, x_j) over ordered pairs of distinct items of each resample: [k]."""
    diag = (x.pow(2).sum(1) / x.shape[1] + 1).pow(3)
    w2 = w.pow(2)
    pairs = w.sum(1).pow(2) - w2.sum(1)
    # A resample of copies of one item has no pairs: undefined, NaN (intervals skip it).
    return torch.where(pairs > 0, (_kernel_sums(x, x, w, w) - w2 @ diag) / pairs.clamp(min=1), torch.nan)


def kernel_distance(x: torch.Tensor, y: torch.Tensor, wx: torch.Tensor | None = None,
                    wy: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased KID [k] between features x [n, d] and y [m, d] under count vectors wx [k, n],
    wy [k, m] (None: every item once)."""
    x, y = x.double(), y.double()
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"KID needs at least 2 items per set, got {x.shape[0]} and {y.shape[0]}")
    wx = _ones(x.shape[0]) if wx is None else wx
    wy = _ones(y.shape[0]) if wy is None else wy
    cross = _kernel_sums(x, y, wx, wy) / (wx.sum(1) * wy.sum(1))
    return _self_term(x, wx) + _self_term(y, wy) - 2 * cross


def fid_kid(real: torch.Tensor, fake: torch.Tensor, bootstrap: int = 200, seed: int = 0,
            prefix: str = "") -> dict[str, float]:
    """{fid, fid_lo, fid_hi, kid, kid_lo, kid_hi} (keys prefixed) of features real [n, d]
    against fake [m, d]; intervals from `bootstrap` resamples of both sets (0: no intervals)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need feature matrices [n, d] of one width, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {real.shape[0]} and {fake.shape[0]}")
    fid, kid = float(frechet_distance(real, fake)[0]), float(kernel_distance(real, fake)[0])
    if bootstrap <= 0:
        return {f"{prefix}fid": fid, f"{prefix}kid": kid}
    gen = torch.Generator().manual_seed(seed)
    wr, wf = bootstrap_counts(real.shape[0], bootstrap, gen), bootstrap_counts(fake.shape[0], bootstrap, gen)
    return (with_interval(f"{prefix}fid", fid, *centred_interval(fid, frechet_distance(real, fake, wr, wf)))
            | with_interval(f"{prefix}kid", kid, *centred_interval(kid, kernel_distance(real, fake, wr, wf))))
