"""The Transfusion model and loss (arXiv 2408.11039, sec 3 and 4.1).

Causality with the real model: perturbing a later element changes no earlier output; a patch
change reaches every patch of its own image (bidirectional) or only later ones (causal image
attention ablation); packed documents never see each other. Loss: total = L_LM + lambda L_DDPM
(+ z), each part recomputed by hand; the noise limit on image-first images reaches the forward.
"""

from __future__ import annotations

import copy

import pytest
import torch

from data.sequences import pack
from model.batch import IMAGE, TEXT, PackedBatch
from model.patches import patchify
from model.rope import rope_angles
from conftest import loss_parts

UNCHANGED = 1e-6  # observed differences are exactly 0; changed outputs differ by >= ~5e-4
CHANGED = 1e-5


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def two_doc_batch(special, text, image, elements_per_image) -> PackedBatch:
    """One row: doc 0 = BOS t t t t BOI [image 0] EOI t t t EOS, doc 1 = BOS t t BOI [image 1]
    EOI t t t EOS, then 4 padding elements."""
    examples = [[text(4, 0), image(0), text(3, 1)], [text(2, 2), image(1), text(3, 3)]]
    batch = pack(examples, 56, special, elements_per_image)
    assert batch.tokens.shape == (1, 56) and batch.images.shape[0] == 2
    assert (batch.doc_id[0] == 0).sum() == 27 and (batch.doc_id[0] == 1).sum() == 25
    return batch


def _outputs(model, batch: PackedBatch, x_t: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hidden states [L, dim] and logits [L, V] of row 0 at every position, eps [n, C, H, W] and
    eps per patch [n, P, C*k*k]."""
    cfg = model.cfg
    with torch.no_grad():
        x, _ = model.embed(batch.tokens, batch.modality, x_t, t)
        cos, sin = rope_angles(batch.position, cfg.backbone.head_dim, cfg.backbone.rope_theta)
        h = model.backbone(x, cos, sin, model.attention_mask(batch.doc_id, batch.image_id))
        everywhere = torch.ones_like(batch.tokens, dtype=torch.bool)
        logits, eps = model(batch, x_t, t, everywhere)
    logits = logits.view(*batch.tokens.shape, -1)
    torch.testing.assert_close(logits, model.head(h).detach(), atol=1e-5, rtol=0)
    return {"h": h[0], "logits": logits[0], "eps": eps, "eps_patches": patchify(eps, cfg.patch.patch_size)}


def _diff(a: dict, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position change [L] (max over hidden state and logits) and per-patch change of eps [n, P]."""
    pos = torch.maximum((a["h"] - b["h"]).abs().amax(-1), (a["logits"] - b["logits"]).abs().amax(-1))
    return pos, (a["eps_patches"] - b["eps_patches"]).abs().amax(-1)


def _most(x: torch.Tensor) -> float:
    """Largest change in x (0 for an empty selection)."""
    return float(x.max()) if x.numel() else 0.0


def _image_cols(batch: PackedBatch, i: int) -> torch.Tensor:
    return torch.nonzero(batch.image_id[0] == i).flatten()


def _text_positions(batch: PackedBatch) -> list[int]:
    return torch.nonzero(batch.modality[0] == TEXT).flatten().tolist()


def _other_token(tok: int) -> int:
    return 5 + (tok - 5 + 17) % 59  # a different ordinary id


T_FIXED = torch.tensor([300, 700])


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("image_attention", ["bidirectional", "causal"])
def test_changing_a_text_token_changes_nothing_earlier(make_model, two_doc_batch, image_attention):
    model = make_model(image_attention=image_attention)
    batch = two_doc_batch
    base = _outputs(model, batch, batch.images, T_FIXED)
    doc = batch.doc_id[0]
    img_start = {i: int(_image_cols(batch, i)[0]) for i in range(2)}
    for j in _text_positions(batch):
        pert = copy.deepcopy(batch)
        pert.tokens[0, j] = _other_token(int(batch.tokens[0, j]))
        d_pos, d_eps = _diff(base, _outputs(model, pert, batch.images, T_FIXED))
        assert _most(d_pos[:j]) <= UNCHANGED, f"token {j} changed an earlier output"
        assert _most(d_pos[doc != doc[j]]) <= UNCHANGED, f"token {j} leaked into another document"
        assert d_pos[j] > CHANGED  # the perturbation is real
        if j + 1 < doc.shape[0] and doc[j + 1] == doc[j]:
            assert d_pos[j + 1] > CHANGED  # and it reaches the next element of its document
        for i in range(2):  # images before j, or in the other document, are untouched
            if img_start[i] < j or doc[img_start[i]] != doc[j]:
                assert _most(d_eps[i]) <= UNCHANGED
            else:
                assert d_eps[i].min() > CHANGED


def test_changing_a_later_image_changes_nothing_earlier(make_model, two_doc_batch):
    model = make_model()
    batch = two_doc_batch
    base = _outputs(model, batch, batch.images, T_FIXED)
    cols1 = _image_cols(batch, 1)
    x_t = batch.images.clone()
    x_t[1] = torch.randn(x_t[1].shape, generator=torch.Generator().manual_seed(7))
    d_pos, d_eps = _diff(base, _outputs(model, batch, x_t, T_FIXED))
    assert _most(d_pos[: int(cols1[0])]) <= UNCHANGED  # all of doc 0 and doc 1's prefix up to BOI
    assert _most(d_eps[0]) <= UNCHANGED
    assert d_pos[cols1].min() > CHANGED and d_eps[1].min() > CHANGED
    # The same image at another noise level is another input too.
    d_pos, d_eps = _diff(base, _outputs(model, batch, batch.images, torch.tensor([300, 701])))
    assert _most(d_pos[: int(cols1[0])]) <= UNCHANGED and _most(d_eps[0]) <= UNCHANGED
    assert d_pos[cols1].min() > CHANGED


@pytest.mark.parametrize("p", [0, 5, 15])
@pytest.mark.parametrize("image_attention", ["bidirectional", "causal"])
def test_changing_one_patch(make_model, two_doc_batch, elements_per_image, image_attention, p):
    """Perturb only patch p's k x k region of image 0 (linear codec: it enters one element)."""
    model = make_model(image_attention=image_attention)
    k = model.cfg.patch.patch_size
    grid = model.cfg.patch.latent_size // k
    batch = two_doc_batch
    base = _outputs(model, batch, batch.images, T_FIXED)
    x_t = batch.images.clone()
    r, c = divmod(p, grid)  # raster order
    x_t[0, :, r * k:(r + 1) * k, c * k:(c + 1) * k] += 1.0
    d_pos, d_eps = _diff(base, _outputs(model, batch, x_t, T_FIXED))
    cols = _image_cols(batch, 0)
    first, last = int(cols[0]), int(cols[-1])
    doc = batch.doc_id[0]
    assert _most(d_pos[:first]) <= UNCHANGED  # nothing before the image, BOI included
    assert _most(d_pos[doc == 1]) <= UNCHANGED and _most(d_eps[1]) <= UNCHANGED
    assert d_pos[cols[p]] > CHANGED
    if image_attention == "bidirectional":
        assert d_pos[cols].min() > CHANGED  # every patch of its own image sees it
        assert d_eps[0].min() > CHANGED
    else:
        assert _most(d_pos[cols[:p]]) <= UNCHANGED  # only this patch and later ones
        assert _most(d_eps[0, :p]) <= UNCHANGED
        assert d_pos[cols[p:]].min() > CHANGED and d_eps[0, p:].min() > CHANGED
    assert d_pos[last + 1:int((doc == 0).sum())].min() > CHANGED  # EOI and the caption after it


def test_packed_document_computes_as_if_alone(make_model, special, text, image, elements_per_image):
    """Documents do not see each other: doc 1 packed behind doc 0 gives the outputs it gives alone
    in a row (to rounding; RoPE is relative, so this checks isolation, not the position restart,
    which test_sequences checks)."""
    model = make_model()
    ex0, ex1 = [text(4, 0), image(0), text(3, 1)], [text(2, 2), image(1), text(3, 3)]
    packed = pack([ex0, ex1], 56, special, elements_per_image)
    alone = pack([ex1], 56, special, elements_per_image)
    t = torch.tensor([300, 700])
    a = _outputs(model, packed, packed.images, t)
    b = _outputs(model, alone, alone.images, t[1:])
    n1 = int((packed.doc_id[0] == 1).sum())
    torch.testing.assert_close(a["h"][packed.doc_id[0] == 1], b["h"][:n1], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["eps"][1:], b["eps"], atol=1e-5, rtol=0)


def test_dropout_is_off_in_eval_mode(make_model, two_doc_batch):
    model = make_model(backbone={"dropout": 0.5})
    batch = two_doc_batch
    a, b = (_outputs(model, batch, batch.images, T_FIXED) for _ in range(2))
    assert torch.equal(a["h"], b["h"]) and torch.equal(a["eps"], b["eps"])


# ----------------------------------------------------------------------------- loss


def _hand_loss(model, diffusion, batch: PackedBatch, seed: int) -> dict[str, torch.Tensor]:
    """Every loss part recomputed without loss_terms, lm_targets or next_token_sums,
    from the same generator draws (timesteps first, then the noise)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    n = batch.images.shape[0]
    t = diffusion.sample_timesteps(n, batch.image_first, generator=g)
    noise = torch.randn(batch.images.shape, generator=g)
    abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * batch.images + (1 - abar).sqrt() * noise
    logits, eps = model(batch, x_t, t, torch.ones_like(batch.tokens, dtype=torch.bool))
    logits = logits.view(*batch.tokens.shape, -1)
    # Next-token targets by hand: i -> i+1 both text, same document, same row.
    terms, lse = [], []
    B, L = batch.tokens.shape
    for r in range(B):
        for i in range(L - 1):
            m, m1 = int(batch.modality[r, i]), int(batch.modality[r, i + 1])
            if m == TEXT and m1 == TEXT and batch.doc_id[r, i] == batch.doc_id[r, i + 1]:
                terms.append(-torch.log_softmax(logits[r, i], -1)[batch.tokens[r, i + 1]])
                lse.append(torch.logsumexp(logits[r, i], -1))
    lm = torch.stack(terms).mean()
    z = cfg.z_loss * torch.stack(lse).pow(2).mean()
    per_image = torch.stack([((eps[i] - noise[i]) ** 2).mean() for i in range(n)])
    diff = per_image.mean()
    return {"lm": lm, "diffusion": diff, "z": z, "total": lm + cfg.lambda_diffusion * diff + z,
            "n_text": len(terms), "t": t}


@pytest.mark.parametrize("lam, z_loss", [(5.0, 0.0), (2.5, 0.0), (5.0, 1e-2)])
def test_loss_decomposition_and_hand_computation(make_model, diffusion, two_doc_batch, lam, z_loss):
    model = make_model(lambda_diffusion=lam, z_loss=z_loss)
    batch = two_doc_batch
    parts = loss_parts(model, diffusion, batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(parts.total, parts.lm + lam * parts.diffusion + parts.z)
    hand = _hand_loss(model, diffusion, batch, seed=3)
    for name in ("lm", "diffusion", "z", "total"):
        torch.testing.assert_close(getattr(parts, name), hand[name].detach(), rtol=1e-5, atol=1e-7)
    assert parts.n_text_targets == hand["n_text"] == 9 + 7 and parts.n_images == 2
    assert parts.diffusion > 0.1 and (z_loss == 0) == (parts.z == 0)



@pytest.mark.parametrize("noise_limit", [500, None])
def test_noise_limit_reaches_the_forward(make_model, special, text, image, elements_per_image, noise_limit):
    from model.diffusion import Diffusion, DiffusionConfig

    model = make_model()
    diffusion = Diffusion(DiffusionConfig(noise_limit=noise_limit))
    examples = [[image(0), text(3, 0)], [text(3, 1), image(1)], [image(2), text(2, 2)], [text(2, 3), image(3)]]
    batch = pack(examples, 48, special, elements_per_image)
    assert batch.image_first.tolist() == [True, False, True, False]
    seen = []
    hook = model.patch_enc.register_forward_pre_hook(lambda mod, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        with torch.no_grad():
            for seed in range(40):
                loss_parts(model, diffusion, batch, generator=torch.Generator().manual_seed(seed))
                hand = _hand_loss(model, diffusion, batch, seed)
                x_t, t = seen[-2]  # loss_parts's call (the hand one comes after)
                assert torch.equal(t, hand["t"])
                g = torch.Generator().manual_seed(seed)
                diffusion.sample_timesteps(4, batch.image_first, generator=g)
                noise = torch.randn(batch.images.shape, generator=g)
                torch.testing.assert_close(x_t, diffusion.q_sample(batch.images, t, noise), atol=0, rtol=0)
    finally:
        hook.remove()
    ts = torch.stack([t for _, t in seen[::2]])  # [draws, 4]
    first = batch.image_first
    assert ts[:, ~first].max() > 500  # caption-first images use the whole schedule
    if noise_limit is None:
        assert ts[:, first].max() > 500
    else:
        assert ts[:, first].max() <= 500 and ts[:, first].min() >= 0


def test_text_only_batch(make_model, diffusion, special, text, elements_per_image):
    model = make_model()
    batch = pack([[text(20, 0)], [text(30, 1)]], 24, special, elements_per_image)
    assert batch.images.shape[0] == 0
    parts = loss_parts(model, diffusion, batch, generator=torch.Generator().manual_seed(0))
    assert parts.n_images == 0 and parts.diffusion == 0 and torch.isfinite(parts.total)
    assert torch.equal(parts.total, parts.lm) and parts.lm > 0
    parts.total.backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0


def test_image_only_batch(make_model, diffusion, special, image, elements_per_image):
    """A row of patches only (no text at all): L_LM is 0 and the loss is lambda * L_DDPM."""
    P = elements_per_image
    model = make_model()
    batch = PackedBatch(
        tokens=torch.full((1, P), special.pad),
        modality=torch.full((1, P), IMAGE),
        image_id=torch.zeros(1, P, dtype=torch.long),
        doc_id=torch.zeros(1, P, dtype=torch.long),
        position=torch.arange(P)[None],
        images=image(0).data[None],
        image_first=torch.tensor([True]),
    )
    batch.check()
    parts = loss_parts(model, diffusion, batch, generator=torch.Generator().manual_seed(0))
    assert parts.n_text_targets == 0 and parts.lm == 0 and torch.isfinite(parts.total)
    torch.testing.assert_close(parts.total, model.cfg.lambda_diffusion * parts.diffusion, rtol=1e-6, atol=0)
    parts.total.backward()
    assert model.patch_enc.proj.weight.grad.abs().sum() > 0 and model.patch_dec.proj.weight.grad.abs().sum() > 0
    # Image-only examples packed with their BOS/BOI/EOI/EOS also work.
    packed = pack([[image(1)], [image(2)]], P + 4, special, P)
    parts = loss_parts(model, diffusion, packed, generator=torch.Generator().manual_seed(0))
    assert parts.n_images == 2 and torch.isfinite(parts.total)


@pytest.mark.parametrize("kind", ["linear", "unet"])
def test_gradient_reaches_every_parameter(make_model, make_cfg, diffusion, two_doc_batch, kind):
    model = make_model(make_cfg(patch={"kind": kind})).train()
    parts = loss_parts(model, diffusion, two_doc_batch, generator=torch.Generator().manual_seed(0))
    parts.total.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"


def test_unet_codec_forward_shapes_and_causality(make_model, make_cfg, two_doc_batch):
    model = make_model(make_cfg(patch={"kind": "unet"}))
    batch = two_doc_batch
    logits, eps = model(batch, batch.images, T_FIXED)
    assert logits.shape == (int(batch.lm_targets()[0].sum()), 64) and eps.shape == batch.images.shape
    base = _outputs(model, batch, batch.images, T_FIXED)
    x_t = batch.images.clone()
    x_t[1] += 1.0  # the later image
    d_pos, d_eps = _diff(base, _outputs(model, batch, x_t, T_FIXED))
    first1 = int(_image_cols(batch, 1)[0])
    assert _most(d_pos[:first1]) <= UNCHANGED and _most(d_eps[0]) <= UNCHANGED
    assert d_eps[1].min() > CHANGED


def test_logits_only_where_asked(make_model, two_doc_batch):
    model = make_model()
    batch = two_doc_batch
    logits, eps = model(batch, batch.images, T_FIXED)
    mask, _ = batch.lm_targets()
    assert logits.shape == (int(mask.sum()), 64)
    assert eps.shape == batch.images.shape


def test_patch_size_mismatch_raises(make_model, diffusion, special, text, image):
    model = make_model()  # 2 x 2 patches: 16 per 8 x 8 latent
    batch = pack([[text(3, 0), image(0)]], 32, special, elements_per_image=4)  # packed for 4 x 4
    with pytest.raises(ValueError, match="patch size"):
        loss_parts(model, diffusion, batch)
