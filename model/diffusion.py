"""Gaussian diffusion for Transfusion's image patches: schedule, noising, loss and samplers.

The network only predicts; everything else lives here and takes the model as a callable
``model_fn(x_t [n, ...], t LongTensor[n]) -> prediction [n, ...]`` (DiT's split). What the
network predicts is `DiffusionConfig.prediction`:
    eps   the noise (paper sec 3.2, the default)
    v     sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, "Progressive distillation")
    x0    the clean latent
Training regresses the chosen target (`target`); sampling converts the prediction to the pair
(x0_hat, eps_hat) exactly (`split`). Paper (Transfusion sec 3/4): DDPM, epsilon prediction,
T = 1000, cosine schedule, loss per image, noise limited to t <= 500 for image-first pairs;
inference denoises 250 steps with classifier-free guidance.

Index convention (as in Nichol & Dhariwal 2021, "Improved DDPM", their 0-based code):
timestep index t = 0 .. T-1, t = 0 least noisy. With f(u) = cos^2((u + s)/(1 + s) * pi/2),
    betas[t] = min(1 - f((t+1)/T) / f(t/T), 0.999),   alphas_cumprod[t] = prod_{i<=t}(1 - betas[i])
so alphas_cumprod[t] = f((t+1)/T) / f(0) exactly wherever no clip bit (only t = T-1, where
f(1) = 0, is clipped: without it the last step would have abar = 0 and x0 = eps/0).
"Previous" of t = 0 is the clean image, abar = 1.

Why the sampling grid depends on the prediction (Lin et al. 2024, "Common Diffusion Noise
Schedules and Sample Steps Are Flawed", sec 3): the cosine schedule ends at abar_{T-1} =
2.4e-9, zero terminal SNR in effect. There epsilon carries no information about x0, and
x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar) multiplies the model's eps error by
sigma_t = sqrt((1 - abar) / abar) = 2e4; a DDIM step of 25 from t = 999 passed ~1,300x of it
on to x_{t_prev}. More generally an eps error integrated along the sampling path lands in x0
weighted by sigma, so what matters is the highest sigma the grid visits (Karras et al. 2022,
sec 5). Lin et al. therefore pair "trailing" grids (the first step at t = T-1, which they
recommend) with v prediction, whose x0_hat = sqrt(abar) x_t - sqrt(1 - abar) v_hat never
divides by sqrt(abar); x0 prediction needs no division either. Epsilon prediction instead
samples on a "capped" grid: trailing over [0, t_cap], t_cap the last timestep with abar >=
EPS_MIN_ABAR = 4.7e-3, the terminal abar of the scaled-linear schedule on which latent
diffusion trains its eps models (Rombach et al. 2022; Lin et al. 2024 sec 3.1). For the
cosine schedule t_cap = 954 and sigma <= 14.2 at every step count (DDIM's "leading" grid
would visit sigma 16 at 25 steps but 214 at 250). Pure noise stands in for x_954 at a relative
signal variance of 0.5%, the same leak latent diffusion samples with. `timestep_schedule(...,
spacing="auto")` picks capped for eps and trailing otherwise; eps on a grid through t = T-1 is
refused. Independently, `clip_x0` clamps x0_hat to the latent range the autoencoder records
(static thresholding; Ho et al. 2020's clipped denoising for pixels, Saharia et al. 2022 for
strong guidance): a bound on what residual amplification or guidance can do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SCHEDULES = ("cosine", "linear")
METHODS = ("ddpm", "ddim")
PREDICTIONS = ("eps", "v", "x0")
SPACINGS = ("auto", "capped", "trailing")
EPS_MIN_ABAR = 4.7e-3  # the highest noise eps samples from (module docstring)
MAX_BETA = 0.999  # Nichol & Dhariwal 2021 sec 3.2: clip to avoid singularities near t = T


@dataclass
class DiffusionConfig:
    timesteps: int = 1000  # T (paper)
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (Ho et al., scaled to T)
    noise_limit: int | None = 500  # image-first pairs sample t <= noise_limit (paper); None disables
    cosine_s: float = 0.008  # Nichol & Dhariwal's offset: keeps beta_0 from being vanishingly small
    prediction: str = "eps"  # what the network predicts: "eps" (paper), "v" or "x0" (module docstring)

    def validate(self) -> None:
        """ValueError (one line) naming the first bad field."""
        T = self.timesteps
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"DiffusionConfig.timesteps must be an int >= 1, got {T!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"DiffusionConfig.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"DiffusionConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "linear" and 0.02 * 1000.0 / T >= 1:
            raise ValueError(f"DiffusionConfig.timesteps must be > 20 for the linear schedule (beta_T < 1), got {T}")
        nl = self.noise_limit
        if nl is not None and (isinstance(nl, bool) or not isinstance(nl, int) or not 0 <= nl < T):
            raise ValueError(f"DiffusionConfig.noise_limit must be None or an int in [0, {T - 1}], got {nl!r}")
        if not (isinstance(self.cosine_s, (int, float)) and self.cosine_s > 0):
            # s = 0 gives beta_0 = 0, abar_0 = 1 and a zero-variance first step (DDIM sigma divides by it)
            raise ValueError(f"DiffusionConfig.cosine_s must be a float > 0, got {self.cosine_s!r}")


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


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[n] -> [n, 1, 1, ...] to broadcast against ``like`` [n, ...]."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Draw on the generator's own device (a CPU generator cannot feed a CUDA randn), then move:
    # the same seed gives the same noise whichever device x lives on.
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _split(prediction: str, x_t: torch.Tensor, pred: torch.Tensor, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a prediction, with a = sqrt(abar), b = sqrt(1 - abar) (floats or tensors
    broadcasting against x_t). Exact inverse of the targets, from x_t = a x0 + b eps and
    v = a eps - b x0 (so a^2 + b^2 = 1 gives x0 = a x_t - b v, eps = b x_t + a v)."""
    if prediction == "eps":
        return (x_t - b * pred) / a, pred
    if prediction == "v":
        return a * x_t - b * pred, b * x_t + a * pred
    return pred, (x_t - a * pred) / b


class Diffusion:
    """Schedule, noising, per-image loss on the prediction target and DDPM/DDIM samplers (see
    the module docstring)."""

    def __init__(self, cfg: DiffusionConfig | None = None) -> None:
        cfg = DiffusionConfig() if cfg is None else cfg
        cfg.validate()
        self.cfg = cfg
        self.T = cfg.timesteps
        betas = _betas(cfg)
        abar = torch.cumprod(1 - betas, dim=0)
        # float64 stays for the samplers (per-step coefficients are Python floats, so no device
        # or dtype juggling and no float32 cancellation in 1 - abar near t = 0).
        self._abar64 = abar
        self.betas = betas.float()  # [T]
        self.alphas_cumprod = abar.float()  # [T]
        # sqrt(abar), sqrt(1 - abar) per (device, dtype), from float64 (`_coefs`): in float32,
        # 1 - abar_0 (~4e-5) would lose ~3 digits.
        self._device_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

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

    def _coefs(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)), each [n] on t's device: float64 for float64 inputs
        (so conversions are exact to rounding there), float32 for every other dtype."""
        key = (t.device, torch.float64 if dtype == torch.float64 else torch.float32)
        if key not in self._device_cache:
            self._device_cache[key] = (self._abar64.sqrt().to(*key), (1 - self._abar64).sqrt().to(*key))
        a, b = self._device_cache[key]
        return a[t], b[t]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. eq 4).

        x0, noise: [n, ...] (any trailing dims); t: LongTensor[n]. Returns [n, ...] in x0's dtype.
        """
        a, b = self._coefs(t.to(x0.device), x0.dtype)
        return _expand(a, x0).to(x0.dtype) * x0 + _expand(b, x0).to(x0.dtype) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to predict for x_t = q_sample(x0, t, noise): noise (eps),
        sqrt(abar) noise - sqrt(1 - abar) x0 (v) or x0. All [n, ...]; t LongTensor[n]."""
        p = self.cfg.prediction
        if p == "eps":
            return noise
        if p == "x0":
            return x0
        a, b = self._coefs(t.to(x0.device), x0.dtype)
        return _expand(a, x0).to(x0.dtype) * noise - _expand(b, x0).to(x0.dtype) * x0

    def split(self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat), each [n, ...], from the network's prediction [n, ...] at x_t [n, ...]
        and timesteps t LongTensor[n]: the exact inverse of `target` (any prediction)."""
        a, b = self._coefs(t.to(x_t.device), x_t.dtype)
        return _split(self.cfg.prediction, x_t, pred, _expand(a, x_t).to(x_t.dtype), _expand(b, x_t).to(x_t.dtype))

    def to_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """eps_hat [n, ...] of a prediction: comparable across predictions (diagnostics)."""
        return self.split(x_t, pred, t)[1]

    def per_image_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[n] MSE of each image, averaged over all its own elements. Inputs [n, ...]."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        return (pred - target).pow(2).reshape(pred.shape[0], -1).mean(dim=1)

    def loss_sum(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar sum over the n images of each image's mean squared error against `target`
        (L_DDPM is its mean over images: model/family.py composes means).

        The paper states the diffusion loss per image (sec 3.3), so an image counts once
        whatever its number of patches. n = 0 gives 0.0, still attached to pred's graph
        (a batch with no images must not make the total loss NaN). The value is in the units
        of the prediction: eps and v losses are comparable in scale, x0 losses are not.
        """
        if pred.shape[0] == 0:
            return pred.sum() * 0.0
        return self.per_image_loss(pred, target).sum()

    # ---------------------------------------------------------------- sampling

    def spacing_for(self, spacing: str) -> str:
        """Resolve "auto": capped for eps prediction, trailing for v and x0 (module docstring)."""
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if spacing == "auto":
            return "capped" if self.cfg.prediction == "eps" else "trailing"
        return spacing

    @property
    def t_cap(self) -> int:
        """The last timestep with abar >= EPS_MIN_ABAR: the top of the capped grid."""
        return int((self._abar64 >= EPS_MIN_ABAR).nonzero().max())

    def timestep_schedule(self, steps: int, spacing: str = "auto") -> torch.Tensor:
        """LongTensor[steps], strictly descending, ending at 0.

        trailing (Lin et al. 2024): evenly spaced from T-1 to 0, both included for steps >= 2
        (steps = 1 gives [T-1]); rounding keeps them distinct since the spacing is >= 1.
        capped: the same from t_cap (954 for the cosine schedule), so steps <= t_cap + 1.
        With eps prediction a grid that contains t = T-1 is an error (x0_hat = eps error x 2e4
        there; see the module docstring).
        """
        spacing = self.spacing_for(spacing)
        top = self.T - 1 if spacing == "trailing" else self.t_cap
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= top + 1:
            raise ValueError(f"steps must be an int in [1, {top + 1}] for the {spacing} grid, got {steps!r}")
        ts = torch.linspace(top, 0, steps, dtype=torch.float64).round().long()
        if self.cfg.prediction == "eps" and int(ts[0]) == self.T - 1:
            raise ValueError(f"eps prediction cannot start sampling at t = {self.T - 1} (abar = "
                             f"{float(self._abar64[-1]):.1e}: x0_hat would amplify the eps error "
                             f"{float(self._abar64[-1]) ** -0.5:.0e}x); use spacing='capped', or prediction v / x0")
        return ts

    def _x0_eps(self, x_t: torch.Tensor, pred: torch.Tensor, ab: float, clip_x0: float | None):
        """(x0_hat, eps_hat) at one timestep of abar `ab` (a Python float: float64 coefficients).
        With clipping, eps is made consistent with the clipped x0 (as in DDIM implementations)
        so both samplers use the same pair."""
        x0, eps = _split(self.cfg.prediction, x_t, pred, math.sqrt(ab), math.sqrt(1 - ab))
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        return x0, eps

    def ddpm_step(
        self, x_t: torch.Tensor, pred: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None,
        clip_x0: float | None = None,
    ) -> torch.Tensor:
        """One ancestral step x_t -> x_{t_prev} (t_prev = -1: the clean image), respaced, from the
        network's prediction `pred` [n, ...].

        Respacing (Nichol & Dhariwal sec 4): beta' = 1 - abar_t / abar_prev; sample from the
        posterior q(x_prev | x_t, x0_hat): mean (Ho et al. eq 7) and variance
        beta' (1 - abar_prev) / (1 - abar_t). noise [n, ...] or None (final step: mean only).
        """
        ab, ab_prev = float(self._abar64[t]), (float(self._abar64[t_prev]) if t_prev >= 0 else 1.0)
        x0, _ = self._x0_eps(x_t, pred, ab, clip_x0)
        beta = 1 - ab / ab_prev
        mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x_t
        if noise is None:
            return mean
        return mean + math.sqrt(beta * (1 - ab_prev) / (1 - ab)) * noise

    def ddim_step(
        self, x_t: torch.Tensor, pred: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None,
        eta: float = 0.0, clip_x0: float | None = None,
    ) -> torch.Tensor:
        """One DDIM step x_t -> x_{t_prev} (Song et al. 2021 eq 12; t_prev = -1: clean image) from
        the network's prediction `pred` [n, ...].

        sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev); eta = 1 makes
        sigma^2 the DDPM posterior variance and the mean the posterior mean, eta = 0 is
        deterministic. noise [n, ...] or None (no noise added).
        """
        ab, ab_prev = float(self._abar64[t]), (float(self._abar64[t_prev]) if t_prev >= 0 else 1.0)
        x0, eps = self._x0_eps(x_t, pred, ab, clip_x0)
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
        spacing: str = "auto",
    ) -> torch.Tensor:
        """Denoise x_T [n, ...] (pure noise) over ``steps`` timesteps from timestep_schedule;
        returns x_0 [n, ...] on x_T's device and dtype.

        model_fn returns the network's prediction (cfg.prediction) and receives the original
        timestep index (0..T-1) as LongTensor[n], not the respaced one. method "ddpm"
        (ancestral, respaced; eta must be 0) or "ddim" (eta >= 0). clip_x0: clamp predicted x0
        to [-clip_x0, clip_x0] (the evaluation passes the autoencoder's latent range). One
        standard-normal draw per step except the last (no noise at the final step), in the
        same order for both methods, so DDIM with eta = 1 reproduces DDPM given the same
        generator state (eta = 0 DDIM draws nothing). Runs under no_grad.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "ddpm" and eta != 0.0:
            raise ValueError(f"eta applies to method 'ddim' only, got eta={eta} with 'ddpm'")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"clip_x0 must be None or > 0, got {clip_x0}")
        ts = self.timestep_schedule(steps, spacing).tolist()
        x = x_T
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            pred = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
            # eta = 0 DDIM is deterministic: skip the draw (it would be multiplied by 0).
            stochastic = method == "ddpm" or eta > 0
            noise = _randn(x.shape, x, generator) if t_prev >= 0 and stochastic else None
            if method == "ddpm":
                x = self.ddpm_step(x, pred, t, t_prev, noise, clip_x0)
            else:
                x = self.ddim_step(x, pred, t, t_prev, noise, eta, clip_x0)
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
