"""Training the in-suite image autoencoders (the models are in data/autoencoders.py).

Losses (means over pixels), as in latent diffusion's VAE training (Rombach et al. 2022) minus its
perceptual and adversarial terms (flat-colour toy images do not need them):
- KL:  rec(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I)) / (3 H W), z ~ q(z|x) reparameterised;
- VQ:  rec(x, D(z_q)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 with a straight-through
  gradient (van den Oord et al. 2017; beta = 0.25 as in the paper). We compute these ourselves:
  diffusers' VectorQuantizer by default puts beta on the codebook term instead ("legacy").
rec is L1 or L2 on images in [-1, 1] (L2 by default: on mostly-black toy images L1 sat at the
all-black answer for hundreds of steps). Dividing the summed KL by the pixel count makes
kl_weight comparable with LDM's (1e-6 for its kl-f8 VAE, whose losses are sums per image).

VQ codebooks collapse easily at small scale, so (our choice) the codebook starts from encoder
outputs of the first batch, and codes unused over the last `restart_every` steps are reset to
random encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox), during the first
90% of training.

After training, KL latents get scale = 1 / std of the posterior means of (up to 1024) training
images, so Transfusion's diffusion sees about unit-variance latents (LDM's scaling factor).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.autoencoders import AutoencoderConfig, ImageAutoencoder, build_diffusers_model, nearest_codes, psnr
from data.records import to_uint8, to_unit_range

SCALE_IMAGES = 1024  # training images used to measure the KL latent std


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless uint8 batches [batch, 3, H, W]: random permutations of a tensor (epoch after
    epoch), or an iterable of single images / batches regrouped to `batch` (stops with it)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[0] == 0:
            raise ValueError(f"training images must be a non-empty uint8 [N, 3, H, W], got {tuple(images.shape)}")
        while True:
            perm = torch.randperm(images.shape[0], generator=gen)
            for i in range(0, len(perm) - batch + 1 if len(perm) >= batch else 1, batch):
                yield images[perm[i:i + batch]]
    buf: list[torch.Tensor] = []
    n = 0
    for item in images:
        item = item[None] if item.dim() == 3 else item
        buf.append(item)
        n += item.shape[0]
        while n >= batch:
            cat = torch.cat(buf)
            yield cat[:batch]
            buf, n = [cat[batch:]], n - batch


def _lr_factor(step: int, steps: int) -> float:
    """Linear warmup over 5% of the steps, then cosine decay to 10% of the peak."""
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


def _rec_loss(cfg: AutoencoderConfig, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(y, x) if cfg.rec_loss == "l1" else F.mse_loss(y, x)


def _kl_step(ae: ImageAutoencoder, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    cfg = ae.config
    post = ae.model.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen, device=x.device)
    y = ae.decode_raw(z)
    rec = _rec_loss(cfg, x, y)
    kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).sum(dim=(1, 2, 3)).mean() / x[0].numel()
    return rec + cfg.kl_weight * kl, rec, kl, y


class _CodebookKeeper:
    """Data-dependent codebook init and dead-code restarts (module docstring)."""

    def __init__(self, codebook: torch.nn.Embedding, restart_every: int, restart_until: int) -> None:
        self.codebook, self.every, self.until = codebook, restart_every, restart_until
        self.usage = torch.zeros(codebook.num_embeddings, dtype=torch.long, device=codebook.weight.device)
        self.last_used: int | None = None  # codes used over the last full window

    @torch.no_grad()
    def prepare(self, step: int, z: torch.Tensor, gen: torch.Generator) -> None:
        """Before quantising step `step`'s encoder outputs z [m, D]: on the first step copy
        random z into the codebook; at the end of each window reset unused codes to random z."""
        K = self.codebook.num_embeddings
        if step == 0:
            self.codebook.weight.copy_(z[torch.randint(0, z.shape[0], (K,), generator=gen, device=z.device)])
        elif step % self.every == 0:
            dead = self.usage == 0
            self.last_used = K - int(dead.sum())
            if step < self.until and self.last_used < K:
                pick = torch.randint(0, z.shape[0], (K - self.last_used,), generator=gen, device=z.device)
                self.codebook.weight[dead] = z[pick]
            self.usage.zero_()

    def count(self, codes: torch.Tensor) -> None:
        self.usage += torch.bincount(codes, minlength=self.usage.shape[0])

    def codes_used(self) -> int:
        """Distinct codes used over the last full window (the current one before the first ends)."""
        return self.last_used if self.last_used is not None else int((self.usage > 0).sum())


def _vq_step(ae: ImageAutoencoder, x: torch.Tensor, keeper: _CodebookKeeper, step: int,
             gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    cfg = ae.config
    h = ae.encode_raw(x)  # [n, D, h, w]
    n, D, hh, ww = h.shape
    z = h.permute(0, 2, 3, 1).reshape(-1, D)
    keeper.prepare(step, z.detach(), gen)
    with torch.no_grad():
        codes = nearest_codes(h, keeper.codebook.weight).reshape(-1)
    keeper.count(codes)
    zq = keeper.codebook(codes)
    vq = F.mse_loss(zq, z.detach()) + cfg.commitment_beta * F.mse_loss(z, zq.detach())
    zq = z + (zq - z).detach()  # straight-through estimator
    y = ae.decode_raw(zq.reshape(n, hh, ww, D).permute(0, 3, 1, 2))
    rec = _rec_loss(cfg, x, y)
    return rec + vq, rec, vq, y


@torch.no_grad()
def _latent_scale(ae: ImageAutoencoder, images: torch.Tensor) -> float:
    z = torch.cat([ae.encode_raw(to_unit_range(c.to(ae.device))) for c in images.split(256)])
    return 1.0 / float(z.std())


def train_autoencoder(cfg: AutoencoderConfig, images: torch.Tensor | Iterable[torch.Tensor], steps: int,
                      batch: int = 16, lr: float = 2e-3, seed: int = 0,
                      log: Callable[[dict], None] | None = None, log_every: int = 100,
                      device: str | torch.device = "cpu", progress: str | None = None) -> ImageAutoencoder:
    """Train an autoencoder of `cfg.kind` from scratch; deterministic given `seed` (and device).

    Args:
        images: uint8 [N, 3, H, W] (sampled in random order, epoch after epoch), or an iterable
            of uint8 images [3, H, W] / batches [b, 3, H, W] (consumed in order).
        steps, batch, lr: optimisation length, images per step, peak AdamW learning rate.
        log: called every `log_every` steps and at the end with a dict (step, loss, rec, kl|vq,
            train psnr of the batch, seconds, and codes_used for VQ).
        progress: a label for a progress bar with an ETA on stderr (None: no bar).
    Returns:
        The trained ImageAutoencoder (eval mode; KL scale set as in the module docstring).
    """
    with torch.random.fork_rng(devices=[]):  # init from the seed without touching the caller's RNG
        torch.manual_seed(seed)
        model = build_diffusers_model(cfg).to(device)
    ae = ImageAutoencoder(model, cfg.kind, cfg.image_size, config=cfg)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    dgen = torch.Generator(device).manual_seed(seed + 1)  # noise and restarts, on the training device
    keeper = (_CodebookKeeper(model.quantize.embedding, restart_every=20, restart_until=int(0.9 * steps))
              if cfg.kind == "vq" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps))
    seen: list[torch.Tensor] = []  # first training images, for the latent scale
    n_seen, start = 0, time.time()
    bar = tqdm(total=steps, desc=progress, file=sys.stderr, mininterval=5, disable=progress is None)
    for step, xb in zip(range(steps), _batches(images, batch, gen)):
        ae.check_images(xb)
        if n_seen < SCALE_IMAGES:
            seen.append(xb[:SCALE_IMAGES - n_seen])
            n_seen += seen[-1].shape[0]
        x = to_unit_range(xb.to(device))
        if cfg.kind == "kl":
            loss, rec, reg, y = _kl_step(ae, x, dgen)
        else:
            loss, rec, reg, y = _vq_step(ae, x, keeper, step, dgen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.update(1)
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            rec_d = {"step": step + 1, "loss": round(loss.item(), 5), "rec": round(rec.item(), 5),
                     cfg.kind: round(reg.item(), 5), "psnr": round(psnr(to_uint8(y.detach()), xb.to(device)), 2),
                     "lr": sched.get_last_lr()[0], "seconds": round(time.time() - start, 1)}
            if keeper is not None:
                rec_d["codes_used"] = keeper.codes_used()
            log(rec_d)
    bar.close()
    model.eval()
    if cfg.kind == "kl" and seen:
        ae.scale = _latent_scale(ae, torch.cat(seen))
    return ae
