"""Gaussian diffusion for Transfusion's image patches: schedule, noising, loss and samplers.

The network only predicts epsilon; everything else lives here and takes the model as a
callable ``model_fn(x_t [n, ...], t LongTensor[n]) -> eps_pred [n, ...]`` (DiT's split).
Paper (Transfusion sec 3/4): DDPM, epsilon prediction, T = 1000, cosine schedule, loss per
image, noise limited to t <= 500 for image-first pairs; inference denoises 250 steps with
classifier-free guidance.

Index convention (as in Nichol & Dhariwal 2021, "Improved DDPM", their 0-based code):
timestep index t = 0 .. T-1, t = 0 least noisy. With f(u) = cos^2((u + s)/(1 + s) * pi/2),
    betas[t] = min(1 - f((t+1)/T) / f(t/T), 0.999),   alphas_cumprod[t] = prod_{i<=t}(1 - betas[i])
so alphas_cumprod[t] = f((t+1)/T) / f(0) exactly wherever no clip bit (only t = T-1, where
f(1) = 0, is clipped: without it the last step would have abar = 0 and x0 = eps/0).
"Previous" of t = 0 is the clean image, abar = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SCHEDULES = ("cosine", "linear")
METHODS = ("ddpm", "ddim")
MAX_BETA = 0.999  # Nichol & Dhariwal 2021 sec 3.2: clip to avoid singularities near t = T


@dataclass
class DiffusionConfig:
    timesteps: int = 1000  # T (paper)
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (Ho et al., scaled to T)
    noise_limit: int | None = 500  # image-first pairs sample t <= noise_limit (paper); None disables
    cosine_s: float = 0.008  # Nichol & Dhariwal's offset: keeps beta_0 from being vanishingly small


def _betas(cfg: DiffusionConfig) -> torch.Tensor:
    """float64 betas [T]."""
    T = cfg.timesteps
    if cfg.schedule == "linear":
        # Ho et al. 2020's 1e-4..0.02 for T = 1000, scaled so other T give a similar abar curve.
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + cfg.cosine_s) / (1 + cfg.cosine_s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


def _validate(cfg: DiffusionConfig) -> None:
    T = cfg.timesteps
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"DiffusionConfig.timesteps must be an int >= 1, got {T!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"DiffusionConfig.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    if cfg.schedule == "linear" and 0.02 * 1000.0 / T >= 1:
        raise ValueError(f"DiffusionConfig.timesteps must be > 20 for the linear schedule (beta_T < 1), got {T}")
    nl = cfg.noise_limit
    if nl is not None and (isinstance(nl, bool) or not isinstance(nl, int) or not 0 <= nl < T):
        raise ValueError(f"DiffusionConfig.noise_limit must be None or an int in [0, {T - 1}], got {nl!r}")
    if not (isinstance(cfg.cosine_s, (int, float)) and cfg.cosine_s > 0):
        # s = 0 gives beta_0 = 0, abar_0 = 1 and a zero-variance first step (DDIM sigma divides by it)
        raise ValueError(f"DiffusionConfig.cosine_s must be a float > 0, got {cfg.cosine_s!r}")


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[n] -> [n, 1, 1, ...] to broadcast against ``like`` [n, ...]."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Draw on the generator's own device (a CPU generator cannot feed a CUDA randn), then move:
    # the same seed gives the same noise whichever device x lives on.
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class Diffusion:
    """Schedule, noising, per-image epsilon loss and DDPM/DDIM samplers (see module docstring)."""

    def __init__(self, cfg: DiffusionConfig | None = None) -> None:
        cfg = DiffusionConfig() if cfg is None else cfg
        _validate(cfg)
        self.cfg = cfg
        self.T = cfg.timesteps
        betas = _betas(cfg)
        abar = torch.cumprod(1 - betas, dim=0)
        # float64 stays for the samplers (per-step coefficients are Python floats, so no device
        # or dtype juggling and no float32 cancellation in 1 - abar near t = 0).
        self._abar64 = abar
        self.betas = betas.float()  # [T]
        self.alphas_cumprod = abar.float()  # [T]
        # sqrt(1 - abar) from float64: in float32 1 - abar_0 (~4e-5) would lose ~3 digits.
        self.sqrt_alphas_cumprod = abar.sqrt().float()  # [T]
        self.sqrt_one_minus_alphas_cumprod = (1 - abar).sqrt().float()  # [T]
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- training

    def sample_timesteps(
        self,
        n: int,
        limited: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """LongTensor[n] of training timesteps, uniform on [0, T).

        limited: BoolTensor[n] or None. Where True (image-first pairs, paper sec 4) and
        cfg.noise_limit is set, t is uniform on [0, noise_limit] inclusive instead, so the
        caption that follows sees a recognisable image.
        """
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.T, (n,), generator=generator, device=gen_device)
        if limited is not None and self.cfg.noise_limit is not None:
            if limited.shape != (n,):
                raise ValueError(f"limited must have shape ({n},), got {tuple(limited.shape)}")
            # Both draws always happen so the RNG stream does not depend on the mask.
            t_lim = torch.randint(0, self.cfg.noise_limit + 1, (n,), generator=generator, device=gen_device)
            t = torch.where(limited.to(t.device, torch.bool), t_lim, t)
        return t.to(device) if device is not None else t

    def _coefs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)), each [n] float32 on t's device."""
        if t.device not in self._device_cache:
            self._device_cache[t.device] = (
                self.sqrt_alphas_cumprod.to(t.device),
                self.sqrt_one_minus_alphas_cumprod.to(t.device),
            )
        a, b = self._device_cache[t.device]
        return a[t], b[t]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. eq 4).

        x0, noise: [n, ...] (any trailing dims); t: LongTensor[n]. Returns [n, ...] in x0's dtype.
        """
        a, b = self._coefs(t.to(x0.device))
        return _expand(a, x0).to(x0.dtype) * x0 + _expand(b, x0).to(x0.dtype) * noise

    def per_image_loss(self, eps_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """[n] MSE of each image, averaged over all its own elements. Inputs [n, ...]."""
        if eps_pred.shape != noise.shape:
            raise ValueError(f"eps_pred {tuple(eps_pred.shape)} and noise {tuple(noise.shape)} differ in shape")
        return (eps_pred - noise).pow(2).reshape(eps_pred.shape[0], -1).mean(dim=1)

    def loss(self, eps_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Scalar L_DDPM: per-image mean squared error, then mean over the n images.

        The paper states the diffusion loss per image (sec 3.3), so an image counts once
        whatever its number of patches. n = 0 gives 0.0, still attached to eps_pred's graph
        (a batch with no images must not make the total loss NaN).
        """
        if eps_pred.shape[0] == 0:
            return eps_pred.sum() * 0.0
        return self.per_image_loss(eps_pred, noise).mean()

    # ---------------------------------------------------------------- sampling

    def timestep_schedule(self, steps: int) -> torch.Tensor:
        """LongTensor[steps]: evenly spaced, strictly descending from T-1 to 0 (both included for
        steps >= 2; steps = 1 gives [T-1]). Spacing >= 1 when steps <= T, so rounding keeps them
        distinct."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an int in [1, {self.T}], got {steps!r}")
        return torch.linspace(self.T - 1, 0, steps, dtype=torch.float64).round().long()

    def _predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, ab: float, clip_x0: float | None):
        """x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar); with clipping, eps is made consistent with
        the clipped x0 (as in DDIM implementations) so both samplers use the same pair."""
        x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        return x0, eps

    def ddpm_step(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None,
        clip_x0: float | None = None,
    ) -> torch.Tensor:
        """One ancestral step x_t -> x_{t_prev} (t_prev = -1: the clean image), respaced.

        Respacing (Nichol & Dhariwal sec 4): beta' = 1 - abar_t / abar_prev; sample from the
        posterior q(x_prev | x_t, x0_hat): mean (Ho et al. eq 7) and variance
        beta' (1 - abar_prev) / (1 - abar_t). noise [n, ...] or None (final step: mean only).
        """
        ab, ab_prev = float(self._abar64[t]), (float(self._abar64[t_prev]) if t_prev >= 0 else 1.0)
        x0, _ = self._predict_x0(x_t, eps, ab, clip_x0)
        beta = 1 - ab / ab_prev
        mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x_t
        if noise is None:
            return mean
        return mean + math.sqrt(beta * (1 - ab_prev) / (1 - ab)) * noise

    def ddim_step(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None,
        eta: float = 0.0, clip_x0: float | None = None,
    ) -> torch.Tensor:
        """One DDIM step x_t -> x_{t_prev} (Song et al. 2021 eq 12; t_prev = -1: clean image).

        sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev); eta = 1 makes
        sigma^2 the DDPM posterior variance and the mean the posterior mean, eta = 0 is
        deterministic. noise [n, ...] or None (no noise added).
        """
        ab, ab_prev = float(self._abar64[t]), (float(self._abar64[t_prev]) if t_prev >= 0 else 1.0)
        x0, eps = self._predict_x0(x_t, eps, ab, clip_x0)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
        out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if noise is None or sigma == 0:
            return out
        return out + sigma * noise

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        x_T: torch.Tensor,
        steps: int,
        method: str = "ddim",
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        clip_x0: float | None = None,
    ) -> torch.Tensor:
        """Denoise x_T [n, ...] (pure noise) over ``steps`` timesteps from timestep_schedule;
        returns x_0 [n, ...] on x_T's device and dtype.

        model_fn receives the original timestep index (0..T-1) as LongTensor[n], not the
        respaced one. method "ddpm" (ancestral, respaced; eta must be 0) or "ddim" (eta >= 0).
        clip_x0: clamp predicted x0 to [-clip_x0, clip_x0]; None by default because latents
        are not confined to [-1, 1]. One standard-normal draw per step except the last (no
        noise at the final step), in the same order for both methods, so DDIM with eta = 1
        over all T steps reproduces DDPM given the same generator state (eta = 0 DDIM draws
        nothing). Runs under no_grad.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "ddpm" and eta != 0.0:
            raise ValueError(f"eta applies to method 'ddim' only, got eta={eta} with 'ddpm'")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        ts = self.timestep_schedule(steps).tolist()
        x = x_T
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            eps = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
            # eta = 0 DDIM is deterministic: skip the draw (it would be multiplied by 0).
            stochastic = method == "ddpm" or eta > 0
            noise = _randn(x.shape, x, generator) if t_prev >= 0 and stochastic else None
            if method == "ddpm":
                x = self.ddpm_step(x, eps, t, t_prev, noise, clip_x0)
            else:
                x = self.ddim_step(x, eps, t, t_prev, noise, eta, clip_x0)
        return x


def guided(cond_fn: ModelFn, uncond_fn: ModelFn, scale: float) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + scale (eps_c - eps_u).

    Paper inference uses scale 5 (Chameleon comparison) or 3 (ablations). scale = 1 returns
    cond_fn itself and scale = 0 uncond_fn, each skipping the other forward pass. Callers that
    want one batched forward for both can pass functions that share a cache.
    """
    if scale == 1.0:
        return cond_fn
    if scale == 0.0:
        return uncond_fn

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_u = uncond_fn(x_t, t)
        return eps_u + scale * (cond_fn(x_t, t) - eps_u)

    return model_fn
