"""Mixed-modal decoding: the KV-cached path against full recomputation, padding, budgets."""

from __future__ import annotations

import torch

from model.batch import Image, Text
from model.engine import sample_token
from model.generate import SamplingConfig, caption, generate, text_to_image


def _force_boi(model, special, donor: int = 9) -> None:
    """Make BOI about as likely as token `donor`, so free-running decoding emits images."""
    with torch.no_grad():
        model.head.weight[special.boi] = model.head.weight[donor]


def _decode_both(model, diffusion, prompts, special, cfg, seed=1):
    out = []
    for use_cache in (True, False):
        out.append(generate(model, diffusion, prompts, special, cfg, torch.Generator().manual_seed(seed), use_cache))
    return out


def _assert_same(a, b, rtol=1e-4):
    assert len(a) == len(b)
    for segs_a, segs_b in zip(a, b):
        assert [type(s) for s in segs_a] == [type(s) for s in segs_b]
        for sa, sb in zip(segs_a, segs_b):
            if isinstance(sa, Text):
                assert sa.ids.tolist() == sb.ids.tolist()
            else:
                scale = sb.data.abs().max().clamp(min=1.0)
                assert ((sa.data - sb.data).abs().max() / scale) < rtol


def test_cached_equals_uncached_mixed_modal(make_model, diffusion, special, text, image):
    """Greedy text token for token, images patch for patch, with an image generated
    mid-sequence, guidance on, prompts of different lengths and a prompt image."""
    model = make_model()
    _force_boi(model, special)
    prompts = [[text(3, 1)], [image(0), text(2, 2)], [text(7, 3)], [Text(torch.tensor([5, 6, special.boi]))]]
    cfg = SamplingConfig(max_new_tokens=12, image_steps=6, cfg_scale=3.0, max_images=2)
    cached, uncached = _decode_both(model, diffusion, prompts, special, cfg)
    _assert_same(cached, uncached)
    n_images = sum(isinstance(s, Image) for segs in cached for s in segs)
    assert n_images >= 2  # the forced BOI really exercised image mode inside decoding
    assert isinstance(cached[3][0], Image)  # a prompt ending in BOI starts with an image


def test_cached_equals_uncached_sampling(make_model, diffusion, special, text):
    model = make_model(seed=3)
    _force_boi(model, special)
    prompts = [[text(4, 5)], [text(1, 6)]]
    cfg = SamplingConfig(max_new_tokens=15, temperature=1.0, top_k=8, image_steps=4, sampler="ddpm", max_images=1)
    cached, uncached = _decode_both(model, diffusion, prompts, special, cfg, seed=7)
    _assert_same(cached, uncached)


def test_left_padding_does_not_change_a_row(make_model, diffusion, special, text):
    """A prompt decoded alone and beside a longer prompt gives the same continuation: padding
    is masked and positions start at each row's first real element."""
    model = make_model(seed=2)
    cfg = SamplingConfig(max_new_tokens=10)
    alone = generate(model, diffusion, [[text(3, 1)]], special, cfg)
    batched = generate(model, diffusion, [[text(3, 1)], [text(11, 2)]], special, cfg)
    assert alone[0][0].ids.tolist() == batched[0][0].ids.tolist()


def test_image_budget_and_special_tokens(make_model, diffusion, special, text):
    model = make_model()
    boi_bias = torch.zeros(model.cfg.vocab_size)
    boi_bias[special.boi] = 1e4
    hook = model.head.register_forward_hook(lambda m, i, o: o + boi_bias)  # BOI is the argmax
    cfg = SamplingConfig(max_new_tokens=8, image_steps=2, max_images=2)
    out = generate(model, diffusion, [[text(3)]], special, cfg)
    hook.remove()
    images = [s for s in out[0] if isinstance(s, Image)]
    assert len(images) == 2
    ids = torch.cat([s.ids for s in out[0] if isinstance(s, Text)])
    for banned in (special.boi, special.eoi, special.bos, special.pad):
        assert banned not in ids.tolist()


def test_denoising_recomputes_only_the_image(make_model, diffusion, special, text):
    """With the cache, every denoising step runs the backbone on exactly the P patches."""
    model = make_model()
    lengths = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    p = model.cfg.patch.elements_per_image
    steps = 5
    text_to_image(model, diffusion, [text(6).ids, text(2).ids], special, SamplingConfig(image_steps=steps))
    hook.remove()
    prefill = 1 + 6 + 1  # BOS, caption, BOI (the longer prompt)
    assert lengths == [prefill] + [p] * steps + [p]  # steps, then the clean image joins the prefix


def test_text_to_image_and_caption_shapes(make_model, diffusion, special, text, image):
    model = make_model()
    cfg = SamplingConfig(max_new_tokens=5, image_steps=3)
    latents = text_to_image(model, diffusion, [text(4).ids, text(2).ids, text(9).ids], special, cfg)
    assert latents.shape == (3, 4, 8, 8) and torch.isfinite(latents).all()
    caps = caption(model, diffusion, torch.stack([image(0).data, image(1).data]), special, cfg)
    assert len(caps) == 2 and all(0 < c.numel() <= 5 for c in caps)


def test_sample_token_top_k_one_is_greedy():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_token(logits, 1.0, 1, g), logits.argmax(-1))
    assert torch.equal(sample_token(logits, 0.0, None), logits.argmax(-1))
    draws = torch.stack([sample_token(logits, 1.0, 3, g) for _ in range(50)])
    top3 = logits.topk(3, dim=-1).indices
    assert (draws[..., None] == top3).any(-1).all()


def test_decoding_logits_equal_the_training_forward(make_model, diffusion, special, text, monkeypatch):
    """Re-score prompt + generated continuation with Transfusion.forward on a packed row (the
    training path: its own positions, mask and patch embedding, the image clean at t = 0): the
    logits each token was sampled from equal the forward's logits at the previous element.
    Checks decoding semantics (positions, image commit, masks), not only cache consistency."""
    import model.engine as generate_module
    from model.batch import IMAGE, PackedBatch, layout

    seen = []

    def recording_sample_token(logits, *args, **kwargs):
        seen.append(logits[0].clone())
        return sample_token(logits, *args, **kwargs)

    monkeypatch.setattr(generate_module, "sample_token", recording_sample_token)
    model = make_model(seed=2)
    _force_boi(model, special)  # with these seeds BOI comes after two text tokens
    prompt = [text(4, 1)]
    # Clipping keeps the untrained model's image at a scale where its timestep matters.
    cfg = SamplingConfig(max_new_tokens=14, image_steps=3, max_images=1, clip_x0=3.0)
    out = generate(model, diffusion, [prompt], special, cfg)[0]
    assert [type(s) for s in out] == [Text, Image, Text]
    lay = layout(prompt + out, special, model.cfg.patch.elements_per_image, add_eos=False)
    n = lay.tokens.shape[0]
    batch = PackedBatch(tokens=lay.tokens[None], modality=lay.modality[None], image_id=lay.image_slot[None],
                        doc_id=torch.zeros(1, n, dtype=torch.long), position=torch.arange(n)[None],
                        images=torch.stack(lay.images), image_first=torch.tensor(lay.image_first))
    with torch.no_grad():
        logits, _ = model(batch, batch.images, torch.zeros(len(lay.images), dtype=torch.long),
                          torch.ones(1, n, dtype=torch.bool))
    sampled_at = [j for j in range(1 + 4, n) if lay.modality[j] != IMAGE and lay.tokens[j] != special.eoi]
    assert len(seen) == len(sampled_at) + (len(sampled_at) < cfg.max_new_tokens)  # + an EOS draw
    for got, j in zip(seen, sampled_at):
        finite = torch.isfinite(got)  # decoding bars some special tokens
        torch.testing.assert_close(got[finite], logits[j - 1][finite], rtol=1e-4, atol=1e-5)


def test_denoiser_during_decoding_equals_the_training_forward(make_model, diffusion, special, text, image):
    """The eps the sampler gets for the image after a caption equals the training forward's eps
    for that caption + noisy image packed in a row, at every timestep: positions, masks,
    timestep and patch embedding agree between generation and training."""
    from data.sequences import pack
    from model.generate import _engine

    model = make_model(seed=3)
    captions = [text(5, 1), text(3, 2)]
    x0 = torch.stack([image(0).data, image(1).data])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for step in (0, 400, 999):
        t = torch.full((2,), step)
        x_t = diffusion.q_sample(x0, t, noise)
        batch = pack([[c, Image(x)] for c, x in zip(captions, x0)], 48, special, model.cfg.patch.elements_per_image)
        with torch.no_grad():
            _, trained = model(batch, x_t, t, batch.lm_targets()[0])
            eng = _engine(model, diffusion, special, SamplingConfig(), None, use_cache=True)
            eng.prefill([[Text(torch.cat([c.ids, torch.tensor([special.boi])]))] for c in captions])
            decoded = eng.hook._pass(eng.ctx, torch.ones(2, dtype=torch.bool), eng.pos, eng.next_image_id, x_t, t,
                                     commit=False)
        torch.testing.assert_close(decoded, trained.reshape(decoded.shape), rtol=1e-4, atol=1e-5)
