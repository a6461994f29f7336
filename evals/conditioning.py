"""Conditioning diagnostics: does each family use the other modality at all?

Two measurements on held-out (image, caption) pairs, both with the model's own training forward
over sequences laid out by model.batch.layout exactly as the trainer's packer lays them out
(one example per row here, so no example is cut across rows):

- Caption NLL per token (both families): the caption's tokens and EOS scored after
  [BOS BOI image EOI] with the true image, with another image of the set (a cyclic shift by a
  random offset, so no image keeps its own), and with no image ([BOS caption EOS]). The same
  tokens are scored in all three. Transfusion sees clean latents (t = 0, as in captioning),
  Chameleon its VQ codes. A model that reads the image has true < shuffled;
  cond/caption_image_gain = shuffled - true (nats per token, paired over the same captions).
- Conditional against unconditional noise prediction (Transfusion): a latent noised at t
  (fixed noise), predicted after [BOS caption BOI] and after [BOS BOI] (the unconditional
  context classifier-free guidance uses, paper sec 4.1); the MSE of each against the true noise.
  A prediction of v or x0 is converted to eps (Diffusion.to_eps) so the numbers mean one thing.
  cond/eps_text_gain_t<t> = uncond - cond; guidance has nothing to amplify when it is ~0.

Every value comes with a bootstrap interval over the images (evals/intervals.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.batch import PAD, Image, PackedBatch, Segment, SpecialTokens, Text, layout
from model.diffusion import Diffusion
from model.family import Family
from evals.intervals import ratio_interval, with_interval


def rows_batch(examples: list[list[Segment]], special: SpecialTokens, elements_per_image: int) -> PackedBatch:
    """One example per row, right-padded: a PackedBatch with doc_id 0 / -1 and positions from 0
    (what data/sequences.py's packer produces for an example that starts a row)."""
    lays = [layout(ex, special, elements_per_image) for ex in examples]
    b, length = len(lays), max(lay.tokens.shape[0] for lay in lays)
    tokens = torch.full((b, length), special.pad, dtype=torch.long)
    modality = torch.full((b, length), PAD, dtype=torch.long)
    image_id = torch.full((b, length), -1, dtype=torch.long)
    images, first = [], []
    for r, lay in enumerate(lays):  # per example, not per element
        n = lay.tokens.shape[0]
        tokens[r, :n], modality[r, :n] = lay.tokens, lay.modality
        image_id[r, :n] = torch.where(lay.image_slot >= 0, lay.image_slot + len(images), -1)
        images += lay.images
        first += lay.image_first
    valid = modality != PAD
    return PackedBatch(tokens, modality, image_id, torch.where(valid, 0, -1),
                       torch.arange(length).expand(b, length).clone(),
                       torch.stack(images) if images else torch.zeros(0), torch.tensor(first, dtype=torch.bool))


def _caption_nats(model: nn.Module, family: Family, batch: PackedBatch,
                  special: SpecialTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(nats [B], tokens [B]) of each row's caption tokens and EOS under the model."""
    logits, targets, sel = family.caption_logits(model, batch, special)
    logp = F.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]
    rows = sel.nonzero()[:, 0]
    b = batch.tokens.shape[0]
    nats = torch.zeros(b, dtype=torch.float64, device=logp.device).index_add_(0, rows, -logp.double())
    return nats.cpu(), sel.sum(1).double().cpu()


def _in_batches(fn, examples: list[list[Segment]], special: SpecialTokens, patches: int, batch_size: int,
                device: torch.device):
    """fn(batch on device) for batches of `batch_size` examples; per-row outputs concatenated."""
    outs = [fn(rows_batch(examples[s:s + batch_size], special, patches).to(device))
            for s in range(0, len(examples), batch_size)]
    return [torch.cat(parts) for parts in zip(*outs)] if isinstance(outs[0], tuple) else torch.cat(outs)


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices [n]: a cyclic shift by a random offset in [1, n-1], so no item keeps its place."""
    if n < 2:
        raise ValueError(f"shuffling needs at least 2 items, got {n}")
    return (torch.arange(n) + int(torch.randint(1, n, (), generator=generator))) % n


@torch.no_grad()
def caption_nll(model: nn.Module, family: Family, images: torch.Tensor, captions: list[torch.Tensor],
                special: SpecialTokens, batch_size: int, generator: torch.Generator, bootstrap: int,
                seed: int) -> dict[str, float]:
    """cond/caption_nll_{true,shuffled,none} and cond/caption_image_gain, each with _lo/_hi, of
    captions (token ids [n] each) given images (latents [N, C, h, w] or codes [N, h, w])."""
    n = images.shape[0]
    if n != len(captions):
        raise ValueError(f"{n} images for {len(captions)} captions")
    device = next(model.parameters()).device
    perm = derangement(n, generator)
    conditions = {"true": [[Image(images[i]), Text(captions[i])] for i in range(n)],
                  "shuffled": [[Image(images[int(perm[i])]), Text(captions[i])] for i in range(n)],
                  "none": [[Text(captions[i])] for i in range(n)]}
    fn = lambda b: _caption_nats(model, family, b, special)  # noqa: E731
    res = {k: _in_batches(fn, ex, special, family.elements_per_image, batch_size, device)
           for k, ex in conditions.items()}
    out = {}
    for k, (nats, tokens) in res.items():
        out |= with_interval(f"cond/caption_nll_{k}", *ratio_interval(nats, tokens, bootstrap, seed))
    gain = res["shuffled"][0] - res["true"][0]
    return out | with_interval("cond/caption_image_gain", *ratio_interval(gain, res["true"][1], bootstrap, seed))


@torch.no_grad()
def eps_mse(model: nn.Module, diffusion: Diffusion, latents: torch.Tensor, captions: list[torch.Tensor],
            special: SpecialTokens, timesteps: tuple[int, ...], batch_size: int, generator: torch.Generator,
            bootstrap: int, seed: int) -> dict[str, float]:
    """cond/eps_mse_{cond,uncond}_t<t> and cond/eps_text_gain_t<t> (with _lo/_hi) of a
    Transfusion on latents [N, C, h, w] with their captions, at each timestep in `timesteps`."""
    n, device = latents.shape[0], next(model.parameters()).device
    patches = model.cfg.patch.elements_per_image
    bad = [t for t in timesteps if not 0 <= t < diffusion.T]
    if bad:
        raise ValueError(f"cond_timesteps {bad} outside [0, {diffusion.T - 1}]")
    out: dict[str, float] = {}
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator)
        tt = torch.full((n,), t, dtype=torch.long)
        x_t = diffusion.q_sample(latents.float(), tt, noise)
        mse = {}
        for name, prefix in (("cond", True), ("uncond", False)):
            examples = [[Text(captions[i]), Image(x_t[i])] if prefix else [Image(x_t[i])] for i in range(n)]

            def per_image(batch: PackedBatch) -> torch.Tensor:
                k = batch.images.shape[0]
                xb, tb = batch.images.float(), torch.full((k,), t, dtype=torch.long, device=batch.images.device)
                _, pred = model(batch, xb, tb, torch.zeros_like(batch.modality, dtype=torch.bool))
                eps = diffusion.to_eps(xb, tb, pred.float()) if hasattr(diffusion, "to_eps") else pred.float()
                return eps.cpu()

            eps = _in_batches(per_image, examples, special, patches, batch_size, device)
            mse[name] = (eps - noise).pow(2).flatten(1).mean(1)
            out |= with_interval(f"cond/eps_mse_{name}_t{t}", *ratio_interval(mse[name], torch.ones(n), bootstrap, seed))
        out |= with_interval(f"cond/eps_text_gain_t{t}",
                             *ratio_interval(mse["uncond"] - mse["cond"], torch.ones(n), bootstrap, seed))
    return out
