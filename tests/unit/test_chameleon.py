"""The Chameleon-style baseline (baselines/chameleon.py, baselines/generate.py).

Causality is strict: perturbing a later token or a later code of the same image changes no
earlier output (Transfusion's intra-image attention is bidirectional). The loss is next-token
CE over every target plus the z-loss, recomputed by hand; vocabulary offsets round trip;
decoding emits exactly h*w codes per image, the cached path equals the uncached one, and the
logits each element was drawn from equal the training forward's (guided ones included). At
one named size both families have the same backbone, and their FLOPs per element differ by
the head term only.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import baselines.generate as chameleon_generate
import model.engine as engine_module
from baselines.chameleon import (Chameleon, ChameleonConfig, flops_per_element, lm_targets,
                                 param_counts, tokens_of)
from baselines.generate import ChameleonSamplingConfig, caption, generate, text_to_image
from model.engine import sample_token
from data.sequences import pack
from model.accounting import flops_per_element as tf_flops_per_element
from model.accounting import param_counts as tf_param_counts
from model.backbone import BackboneConfig
from model.batch import IMAGE, PAD, TEXT, Image, PackedBatch, Text, layout
from model.masks import dense_mask
from model.rope import rope_angles
from model.sizes import get_size
from model.transfusion import Transfusion, TransfusionConfig

TEXT_VOCAB, CODEBOOK, GRID = 64, 16, 3  # 9 codes per image
UNCHANGED, CHANGED = 1e-6, 1e-5


def tiny_cfg(**over) -> ChameleonConfig:
    base = dict(backbone=BackboneConfig(dim=32, n_layers=2, n_heads=2, qk_norm=True), text_vocab_size=TEXT_VOCAB,
                codebook_size=CODEBOOK, code_grid=GRID)
    return ChameleonConfig(**{**base, **over})


def tiny_model(seed: int = 0, **over) -> Chameleon:
    torch.manual_seed(seed)
    return Chameleon(tiny_cfg(**over)).eval()


def codes(seed: int = 0) -> Image:
    return Image(torch.randint(0, CODEBOOK, (GRID, GRID), generator=torch.Generator().manual_seed(50 + seed)))


@pytest.fixture
def batch(special, text) -> PackedBatch:
    """One row: doc 0 = BOS t*4 BOI [9 codes] EOI t*3 EOS (20), doc 1 = BOS t*2 BOI [9 codes]
    EOI t*3 EOS (18), then 4 padding elements."""
    b = pack([[text(4, 0), codes(0), text(3, 1)], [text(2, 2), codes(1), text(3, 3)]], 42, special, GRID * GRID)
    assert b.images.shape == (2, GRID, GRID) and (b.doc_id[0] == 0).sum() == 20 and (b.doc_id[0] == 1).sum() == 18
    return b


def all_logits(model: Chameleon, batch: PackedBatch) -> torch.Tensor:
    """Logits [B, L, V] at every position."""
    with torch.no_grad():
        return model(batch, torch.ones_like(batch.tokens, dtype=torch.bool)).view(*batch.tokens.shape, -1)


def logits_of(model: Chameleon, ids: torch.Tensor) -> torch.Tensor:
    """Logits [n, V] of one document of joint ids [n], straight from the modules."""
    n, b = ids.shape[0], model.cfg.backbone
    cos, sin = rope_angles(torch.arange(n)[None], b.head_dim, b.rope_theta)
    zeros = torch.zeros(1, n, dtype=torch.long)
    return model.head(model.backbone(model.tok_emb(ids[None]), cos, sin, dense_mask(zeros, zeros - 1, False)))[0]


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_offsets_round_trip(batch, special):
    cfg = tiny_cfg()
    c = torch.arange(CODEBOOK).view(4, 4)
    ids = cfg.code_to_token(c)
    assert ids.min() == TEXT_VOCAB and ids.max() == TEXT_VOCAB + CODEBOOK - 1 == cfg.vocab_size - 1
    assert torch.equal(cfg.token_to_code(ids), c)
    with pytest.raises(ValueError, match="code range"):
        cfg.token_to_code(torch.tensor([special.boi]))
    # VQ codes may be stored as int16 (data/autoencoders.py encode_dataset).
    b16 = dataclasses.replace(batch, images=batch.images.to(torch.int16))
    tokens = tokens_of(b16, cfg)
    is_text = batch.modality == TEXT
    assert torch.equal(tokens[is_text], batch.tokens[is_text]) and (tokens[is_text] < TEXT_VOCAB).all()
    for i in range(2):  # image i's codes in raster order
        assert torch.equal(cfg.token_to_code(tokens[batch.image_id == i]), batch.images[i].flatten())
    assert batch.num_elements == 38  # D counts each code: 9 elements per image


def test_config_and_batch_checks(batch):
    with pytest.raises(ValueError, match="codebook_size"):
        tiny_cfg(codebook_size=0).validate()
    with pytest.raises(ValueError, match="attention"):
        tiny_cfg(attention="dense").validate()
    assert ChameleonConfig().backbone.qk_norm and ChameleonConfig().z_loss == 1e-5
    from baselines.spec import ChameleonFamily
    from model.recipe import Recipe

    assert ChameleonFamily.recipe == Recipe(lr=1e-4, qk_norm=True, z_loss=1e-5)  # Chameleon sec 2.3
    with pytest.raises(ValueError, match="code grids"):  # a grid that is not the model's
        tokens_of(dataclasses.replace(batch, images=torch.zeros(2, 1, 9, dtype=torch.long)), tiny_cfg())
    with pytest.raises(ValueError, match="elements_per_image"):  # packed for another grid size
        tokens_of(dataclasses.replace(batch, images=torch.zeros(2, 2, 2, dtype=torch.long)), tiny_cfg(code_grid=2))


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("what", ["text", "code"])
def test_a_later_element_changes_nothing_earlier(batch, what):
    """Perturb one element of doc 0: outputs before it are unchanged, outputs from it on change,
    and doc 1 never sees doc 0. For a code, the earlier codes of the same image are unchanged."""
    model = tiny_model()
    base = all_logits(model, batch)[0]
    pert = dataclasses.replace(batch, tokens=batch.tokens.clone(), images=batch.images.clone())
    if what == "text":
        j = 17  # the second text token after image 0 (doc 0: BOS t*4 BOI c*9 EOI t t ...)
        pert.tokens[0, j] = 5 + (int(batch.tokens[0, j]) - 5 + 17) % 59
    else:
        j = 6 + 5  # code 5 of image 0; codes 0-4 sit at 6-10
        pert.images[0].view(-1)[5] = (pert.images[0].view(-1)[5] + 7) % CODEBOOK
    assert int(batch.modality[0, j]) == (TEXT if what == "text" else IMAGE)
    diff = (all_logits(model, pert)[0] - base).abs().amax(-1)
    doc0 = batch.doc_id[0] == 0
    assert float(diff[:j].max()) < UNCHANGED
    assert float(diff[j:][doc0[j:]].min()) > CHANGED  # every later element of the same document
    assert float(diff[~doc0].max()) < UNCHANGED  # other documents and padding


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_equals_sdpa_forward(batch):
    sdpa = tiny_model(attention="sdpa")
    flex = tiny_model(attention="flex", seed=1)
    flex.load_state_dict(sdpa.state_dict())
    torch.testing.assert_close(all_logits(flex, batch), all_logits(sdpa, batch), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_flex_training_and_cached_decoding(batch, special, text):
    """On CUDA, 'auto' means compiled FlexAttention: loss and gradients match SDPA; decoding
    with the cache runs on the device and equals the uncached path."""
    losses, grads = [], []
    for backend in ("sdpa", "auto"):
        model = tiny_model(attention=backend).cuda().train()
        parts = chameleon_loss(model, batch.to("cuda"))
        parts.total.backward()
        losses.append(parts.total.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    model = tiny_model().cuda()
    cfg = ChameleonSamplingConfig(max_new_tokens=5, cfg_scale=3.0, image_temperature=0.0)
    prompts = [[text(3, 1)], [codes(0), text(2, 2)], [Text(torch.tensor([5, special.boi]))]]
    cached, uncached = [generate(model, prompts, special, cfg, use_cache=c) for c in (True, False)]
    assert_same(cached, uncached)
    assert isinstance(cached[2][0], Image) and cached[2][0].data.shape == (GRID, GRID)


# ----------------------------------------------------------------------------- loss


def chameleon_loss(model, batch):
    """The loss as the trainer composes it (model/family.py combine): .total (the objective),
    the means .lm, .z, .lm_text, .lm_image and the counts .n_text_targets, .n_image_targets."""
    from types import SimpleNamespace

    from baselines.chameleon import LOSS_WEIGHTS, loss_terms
    from model.family import combine

    terms = loss_terms(model, batch)
    total, _ = combine(terms, LOSS_WEIGHTS)
    means = {k: s * 1 / max(1, n) for k, (s, n) in terms.items()}
    return SimpleNamespace(total=total, **means, n_text_targets=terms["lm_text"][1],
                           n_image_targets=terms["lm_image"][1])


def hand_loss(model: Chameleon, batch: PackedBatch) -> dict:
    """Every part by loops over positions, without lm_targets, tokens_of or next_token_sums."""
    logits = all_logits(model, batch)
    ce, lse, is_code = [], [], []
    for r in range(batch.tokens.shape[0]):
        for i in range(batch.tokens.shape[1] - 1):
            if PAD in (int(batch.modality[r, i]), int(batch.modality[r, i + 1])):
                continue
            if batch.doc_id[r, i] != batch.doc_id[r, i + 1]:
                continue
            nxt = i + 1
            if batch.modality[r, nxt] == IMAGE:  # which code: count this image's earlier elements
                img = int(batch.image_id[r, nxt])
                k = int((batch.image_id[r, :nxt] == img).sum())
                target = TEXT_VOCAB + int(batch.images[img].flatten()[k])
            else:
                target = int(batch.tokens[r, nxt])
            ce.append(-torch.log_softmax(logits[r, i], -1)[target])
            lse.append(torch.logsumexp(logits[r, i], -1))
            is_code.append(target >= TEXT_VOCAB)
    ce, lse, is_code = torch.stack(ce), torch.stack(lse), torch.tensor(is_code)
    return {"ce": ce, "lse": lse, "is_code": is_code}


@pytest.mark.parametrize("z_loss", [1e-5, 1e-2, 0.0])
def test_loss_parts_equal_a_hand_computation(batch, z_loss):
    model = tiny_model(z_loss=z_loss)
    parts = chameleon_loss(model, batch)
    hand = hand_loss(model, batch)
    # 19 + 17 targets: BOI -> first code and last code -> EOI included, EOS -> next doc / pad not.
    assert hand["ce"].numel() == 36 and int(hand["is_code"].sum()) == 18
    assert (parts.n_text_targets, parts.n_image_targets) == (18, 18)
    assert torch.equal(parts.total, parts.lm + parts.z)
    torch.testing.assert_close(parts.lm.detach(), hand["ce"].mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(parts.z.detach(), z_loss * hand["lse"].pow(2).mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(parts.lm_text, hand["ce"][~hand["is_code"]].mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(parts.lm_image, hand["ce"][hand["is_code"]].mean(), rtol=1e-5, atol=0)
    assert (z_loss == 0) == (parts.z == 0)


def test_text_only_batch(special, text):
    model = tiny_model()
    batch = pack([[text(6, 0)], [text(3, 1)]], 16, special, GRID * GRID)  # images: torch.zeros(0)
    parts = chameleon_loss(model, batch)
    assert parts.n_image_targets == 0 and parts.lm_image == 0 and parts.n_text_targets == 7 + 4
    torch.testing.assert_close(parts.lm_text, parts.lm.detach())
    mask, _ = lm_targets(batch, tokens_of(batch, model.cfg))
    assert int(mask.sum()) == 11


def test_tiny_model_overfits_a_toy_batch(batch):
    # lr 3e-3, not the config's 1e-4 (Chameleon's recipe for large runs): a few hundred steps
    # at 1e-4 would not move a model this small far enough to show overfitting.
    model = tiny_model(seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = chameleon_loss(model, batch).total
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


# ----------------------------------------------------------------------------- accounting


def _numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize("name", ["cpu-0.8M", "cpu-14M", "0.16B", "7B"])
def test_same_named_size_same_backbone_flops_differ_by_the_head(name):
    tf_cfg = TransfusionConfig(backbone=get_size(name), vocab_size=32000)
    ch_cfg = ChameleonConfig(backbone=get_size(name), text_vocab_size=32000, codebook_size=16384)
    with torch.device("meta"):
        tf, ch = Transfusion(tf_cfg), Chameleon(ch_cfg)
    counts = param_counts(ch_cfg)
    assert _numel(ch.backbone) == _numel(tf.backbone) == counts["n_nonembedding"] == tf_param_counts(tf_cfg)["n_nonembedding"]
    assert counts["n_with_embeddings"] - counts["n_nonembedding"] == _numel(ch.tok_emb, ch.head)
    assert counts["n_with_patch"] == counts["n_with_embeddings"] == _numel(ch)  # no patch layers
    assert counts == tf_param_counts(ch_cfg)  # model.accounting reads the joint vocab_size too
    head_extra = _numel(ch.head) - _numel(tf.head)
    assert head_extra == 16384 * ch_cfg.backbone.dim
    f_ch, f_tf = flops_per_element(ch_cfg, 1024), tf_flops_per_element(tf_cfg, 1024)
    assert f_ch["six_n"] == f_tf["six_n"]
    assert f_ch["six_n_total"] - f_tf["six_n_total"] == 6 * head_extra
    assert f_ch["with_attention"] - f_tf["with_attention"] == 6 * head_extra


def test_stability_recipe_adds_only_qk_norm_weights():
    """Chameleon's default QK-norm on a named size (Transfusion without it) adds two head_dim
    RMSNorm weights per block and nothing else to the backbone."""
    b = get_size("cpu-2.7M")
    with torch.device("meta"):
        extra = _numel(Chameleon(ChameleonConfig(backbone=dataclasses.replace(b, qk_norm=True))).backbone) \
            - _numel(Transfusion(TransfusionConfig(backbone=b)).backbone)
    assert extra == 2 * b.head_dim * b.n_layers


# ----------------------------------------------------------------------------- generation


def boi_bias(model: Chameleon, special, value: float, eos: float = 0.0):
    """Add `value` to BOI's logit and `eos` to EOS's (a forward hook on the head); returns the
    hook handle."""
    bias = torch.zeros(model.cfg.vocab_size)
    bias[special.boi], bias[special.eos] = value, eos
    return model.head.register_forward_hook(lambda m, i, o: o + bias)


def decode_both(model, prompts, special, cfg, seed=1):
    return [generate(model, prompts, special, cfg, torch.Generator().manual_seed(seed), use_cache)
            for use_cache in (True, False)]


def assert_same(a, b):
    assert [[type(s) for s in row] for row in a] == [[type(s) for s in row] for row in b]
    for ra, rb in zip(a, b):
        for sa, sb in zip(ra, rb):
            assert torch.equal(sa.ids if isinstance(sa, Text) else sa.data, sb.ids if isinstance(sb, Text) else sb.data)


@pytest.mark.parametrize("sampling", [False, True])
def test_cached_equals_uncached_with_guidance(special, text, sampling):
    """Rows start images at different steps (one prompt ends in BOI, one holds an image), each
    row makes two images, so the unconditional context restarts while others continue."""
    model = tiny_model(seed=2)
    hook = boi_bias(model, special, 2.0 if sampling else 1e4)
    prompts = [[text(3, 1)], [codes(0), text(2, 2)], [Text(torch.tensor([5, 6, special.boi]))], [text(7, 3)]]
    cfg = ChameleonSamplingConfig(max_new_tokens=6, max_images=2, cfg_scale=3.0,
                                  temperature=1.0 if sampling else 0.0, top_k=10 if sampling else None,
                                  image_temperature=1.0 if sampling else 0.0, image_top_k=8 if sampling else None)
    cached, uncached = decode_both(model, prompts, special, cfg)
    hook.remove()
    assert_same(cached, uncached)
    images = [s.data for row in cached for s in row if isinstance(s, Image)]
    assert len(images) >= (4 if sampling else 8)
    assert isinstance(cached[2][0], Image)  # a prompt ending in BOI starts with an image
    for row in cached:
        ids = torch.cat([s.ids for s in row if isinstance(s, Text)] or [torch.zeros(0, dtype=torch.long)])
        assert not any(t in ids.tolist() for t in (special.bos, special.eoi, special.pad))
        assert (ids < TEXT_VOCAB).all()


def test_generated_code_grids_are_valid_and_decode(special, text):
    model = tiny_model(seed=3)
    cfg = ChameleonSamplingConfig(cfg_scale=5.0, image_top_k=4)
    grids = text_to_image(model, [text(3, 0).ids, text(5, 1).ids], special, cfg, torch.Generator().manual_seed(0))
    assert grids.shape == (2, GRID, GRID) and grids.dtype == torch.long
    assert 0 <= int(grids.min()) and int(grids.max()) < CODEBOOK
    ids = caption(model, grids, special, ChameleonSamplingConfig(max_new_tokens=5))
    assert all(i.numel() <= 5 and (i < TEXT_VOCAB).all() for i in ids)
    pytest.importorskip("diffusers")
    from data.autoencoders import AutoencoderConfig, ImageAutoencoder, build_diffusers_model

    vq = AutoencoderConfig(kind="vq", image_size=2 * GRID, latent_channels=4, downsample=2, block_out_channels=(8, 16),
                           norm_groups=4, codebook_size=CODEBOOK, mid_attention=False)
    ae = ImageAutoencoder(build_diffusers_model(vq), "vq", vq.image_size, config=vq)
    assert ae.latent_shape == (GRID, GRID) and ae.codebook_size == CODEBOOK
    pixels = ae.decode(grids)
    assert pixels.shape == (2, 3, 2 * GRID, 2 * GRID) and pixels.dtype == torch.uint8


def test_decoding_logits_equal_the_training_forward(special, text, monkeypatch):
    """Re-score each row's prompt + continuation with Chameleon.forward: every text token was
    drawn from the forward's logits at the previous element, every code from the guided mix
    with an unconditional BOS BOI + this image's earlier codes (fresh for the second image),
    and EOI was forced after exactly h*w codes. Row 1 starts its images before the others, so
    the rows are in different modes at once."""
    calls = []

    def recording(logits, *args, **kwargs):
        calls.append(logits.clone())
        return sample_token(logits, *args, **kwargs)

    monkeypatch.setattr(chameleon_generate, "sample_token", recording)  # codes
    monkeypatch.setattr(engine_module, "sample_token", recording)  # text
    model, scale = tiny_model(seed=4), 3.0
    hook = boi_bias(model, special, 1e4, eos=-1e4)  # BOI whenever allowed, never EOS
    prompts = [[text(4, 1)], [Text(torch.tensor([5, 6, special.boi]))], [codes(0), text(2, 2)]]
    cfg = ChameleonSamplingConfig(max_new_tokens=4, max_images=2, cfg_scale=scale, image_temperature=0.0)
    outs = generate(model, prompts, special, cfg)
    want: dict[int, list[torch.Tensor]] = {}  # row -> the logits of each of its draws, in order
    for r, out in enumerate(outs):
        assert [type(s) for s in out] == [Image, Image, Text]
        prompt = [Text(torch.tensor([5, 6]))] if r == 1 else prompts[r]  # row 1's BOI is in `out`'s image
        first = layout(prompt, special, GRID * GRID, add_eos=False).tokens.shape[0] + (r == 1)
        lay = layout(prompt + out, special, GRID * GRID, add_eos=False)
        n = lay.tokens.shape[0]
        row = PackedBatch(tokens=lay.tokens[None], modality=lay.modality[None], image_id=lay.image_slot[None],
                          doc_id=torch.zeros(1, n, dtype=torch.long), position=torch.arange(n)[None],
                          images=torch.stack(lay.images), image_first=torch.tensor(lay.image_first))
        with torch.no_grad():
            cond = all_logits(model, row)[0]
            for step, j in enumerate(range(first, n)):  # one generated element per step
                if lay.tokens[j] == special.eoi and lay.modality[j - 1] == IMAGE:
                    continue  # forced, not drawn
                if lay.modality[j] == IMAGE:
                    k = int((lay.image_slot[:j] == lay.image_slot[j]).sum())
                    earlier = lay.images[int(lay.image_slot[j])].flatten()[:k] + TEXT_VOCAB
                    u = logits_of(model, torch.cat([torch.tensor([special.bos, special.boi]), earlier]))[-1]
                    want.setdefault(r, []).append((u + scale * (cond[j - 1] - u))[TEXT_VOCAB:])
                else:
                    want.setdefault(r, []).append(cond[j - 1])
    hook.remove()  # the re-scoring above saw the same biases as decoding

    def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
        finite = torch.isfinite(got)  # text decoding bars specials and codes
        return got.shape == expected.shape and torch.allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-5)

    # Rows make their images at different steps, so a draw serves the rows in its mode at that
    # point: every row's draws must appear, in the row's order, among the calls, and every call
    # must serve some row.
    served = [False] * len(calls)
    for r, expected in want.items():
        k = 0
        for i, got in enumerate(calls):
            if k < len(expected) and close(got[r], expected[k]):
                served[i], k = True, k + 1
        assert k == len(expected), f"row {r}: draw {k} of {len(expected)} never happened with the forward's logits"
    assert all(served)
