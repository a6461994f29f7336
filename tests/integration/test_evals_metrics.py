"""The metrics with power: FID/KID and their bootstrap intervals, the cached reference floors,
Wilson intervals, captions scored by what they say, and the conditioning diagnostics.

FID/KID match torchmetrics on the full sets; a set against itself scores ~0 and noise raises
both; intervals contain the estimate and shrink as n grows; floors are written once and read
back; true captions score ~1 and shuffled ones far less; the caption NLL does not depend on how
the examples are packed into rows. The harness-level checks are in tests/integration/test_evals.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from data.embedded import EmbeddedData
from data.sequences import pack
from evals import distances, fid as fid_mod, floors
from evals.caption_truth import judge, parse, scene_objects, truth_rates
from evals.compositional import geneval_prompts, geneval_references, geneval_with_intervals
from evals.conditioning import _caption_nats, caption_nll, derangement, eps_mse, rows_batch
from evals.intervals import ratio_interval, wilson
from evals.sampling import sample_images
from model.family import ImageSampling
from model.spec import TransfusionFamily
from model.backbone import BackboneConfig
from model.batch import Image, Text
from model.diffusion import Diffusion
from model.patches import PatchConfig
from model.transfusion import Transfusion, TransfusionConfig


@pytest.fixture(scope="module")
def data(prepared) -> EmbeddedData:
    return EmbeddedData(prepared[0])


@pytest.fixture(scope="module")
def fid_net(data):
    """As tests/integration/test_evals.py trains it (whichever module runs first writes the file)."""
    return fid_mod.feature_network(data, "shapes", fid_mod.FeatureNetConfig(steps=40, batch=32))


def _gaussian(n: int, shift: float = 0.0, seed: int = 0, d: int = 16) -> torch.Tensor:
    """n draws of one correlated Gaussian in d dims (the mixing is fixed; `seed` picks the draws)."""
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(12345), dtype=torch.float64) / d ** 0.5
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) @ mix + shift


def _noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_fid_and_kid_equal_torchmetrics_on_the_full_sets(data, fid_net):
    net, _ = fid_net
    real = data.image_set("shapes", "val")["images"]
    fake = _noisy(data.image_set("shapes", "test")["images"], 16)
    ours = distances.fid_kid(fid_mod.features(real, net), fid_mod.features(fake, net), bootstrap=0)
    assert ours["fid"] == pytest.approx(fid_mod.fid(real, fake, net), rel=1e-4)
    assert ours["kid"] == pytest.approx(fid_mod.kid(real, fake, net), rel=1e-4, abs=1e-7)


def test_fid_and_kid_are_zero_for_one_distribution_and_grow_with_noise(data, fid_net):
    net, _ = fid_net
    real = torch.cat([data.image_set("shapes", s)["images"] for s in ("val", "test")])
    f = fid_mod.features(real, net)
    res = [distances.fid_kid(f, fid_mod.features(_noisy(real, s), net), bootstrap=0) for s in (0, 16, 48, 128)]
    assert abs(res[0]["fid"]) < 1e-3
    for key in ("fid", "kid"):
        assert all(b[key] > a[key] for a, b in zip(res, res[1:])), [r[key] for r in res]
    # Unbiased KID of two samples of one distribution is 0 within its interval; a shift is not.
    same = distances.fid_kid(_gaussian(500, seed=1), _gaussian(500, seed=2), bootstrap=200)
    shifted = distances.fid_kid(_gaussian(500, seed=1), _gaussian(500, 0.3, seed=2), bootstrap=200)
    assert same["kid_lo"] < 0 < same["kid_hi"] and shifted["kid_lo"] > 0


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_n():
    widths = {}
    for n in (100, 800):
        res = distances.fid_kid(_gaussian(n, seed=1), _gaussian(n, 0.3, seed=2), bootstrap=200, seed=0)
        for key in ("fid", "kid"):
            assert res[f"{key}_lo"] < res[key] < res[f"{key}_hi"], (n, key, res)
            widths[key, n] = res[f"{key}_hi"] - res[f"{key}_lo"]
    assert widths["fid", 800] < 0.6 * widths["fid", 100] and widths["kid", 800] < 0.6 * widths["kid", 100]
    # The interval reflects sampling: its width matches the spread of fresh draws of both sets.
    res = distances.fid_kid(_gaussian(400, seed=1), _gaussian(400, 0.3, seed=2), bootstrap=200)
    fresh = [distances.fid_kid(_gaussian(400, seed=10 + i), _gaussian(400, 0.3, seed=50 + i), bootstrap=0)
             for i in range(30)]
    for key in ("fid", "kid"):
        sd = float(torch.tensor([r[key] for r in fresh]).std())
        assert 0.7 < (res[f"{key}_hi"] - res[f"{key}_lo"]) / (2 * 1.96 * sd) < 1.6, key


def test_resampled_kid_is_unbiased_and_weights_equal_duplicating_items():
    x, y = _gaussian(50, seed=3), _gaussian(60, 0.2, seed=4)
    w = torch.zeros(1, 50, dtype=torch.float64)
    w[0, :25] = 2.0  # the first 25 items twice each
    dup = x[:25].repeat(2, 1)
    assert distances.frechet_distance(x, y, w)[0] == pytest.approx(float(distances.frechet_distance(dup, y)[0]))
    # KID leaves out pairs of copies of one item, so it equals KID of the 25 distinct items
    assert distances.kernel_distance(x, y, w)[0] == pytest.approx(float(distances.kernel_distance(x[:25], y)[0]))
    with pytest.raises(ValueError, match="feature matrices"):
        distances.fid_kid(x, y[:, :3])


def test_reference_floors_are_written_once_and_reused(data, fid_net, monkeypatch):
    net, tag = fid_net
    real_f = fid_mod.features(data.image_set("shapes", "test")["images"], net)
    ae = data.autoencoder("shapes", "kl")
    first = floors.reference_floors(data, "shapes", "test", real_f, net, tag, ae, bootstrap=50)
    path = floors.floors_path(data, "shapes", "test", real_f.shape[0], "kl", tag)
    before = path.read_bytes()
    assert set(first) == {f"t2i/{m}_{r}" for m in ("fid", "kid") for r in floors.REFERENCES}
    saved = json.loads(before)["values"]
    assert saved["t2i/fid_floor_real_lo"] <= first["t2i/fid_floor_real"] <= saved["t2i/fid_floor_real_hi"]
    # real against real is far closer than black images or decoded noise
    assert first["t2i/fid_floor_real"] < 0.5 * min(first["t2i/fid_ref_black"], first["t2i/fid_ref_random"])

    def boom(*args, **kwargs):
        raise AssertionError("floors recomputed")

    monkeypatch.setattr(floors, "fid_kid", boom)
    again = floors.reference_floors(data, "shapes", "test", real_f, net, tag, ae, bootstrap=50)
    assert again == first and path.read_bytes() == before
    # another autoencoder kind or sample size is another file
    assert floors.floors_path(data, "shapes", "test", 8, "kl", tag) != path
    assert floors.floors_path(data, "shapes", "test", real_f.shape[0], "vq", tag) != path


def test_reconstruction_floor_is_the_codecs_own_and_the_cli_prints_every_floor(data, fid_net, prepared, capsys):
    """A lossless codec's floor is the real floor and a codec that decodes black is the black
    reference, to float rounding: the floor scores the other split's images, in order, through
    the codec's decoder. The CLI prints one record per kind; a bad --n is a one-line error."""
    net, tag = fid_net
    real_f = fid_mod.features(data.image_set("shapes", "test")["images"], net)
    n = real_f.shape[0]
    other = data.image_set("shapes", floors.other_split("test"))["images"][:n]
    ae = data.autoencoder("shapes", "kl")
    refs = floors.reference_floors(data, "shapes", "test", real_f, net, tag, ae, bootstrap=50)

    class Codec:  # decodes the encoded latents of `other`, in order, to `images`
        kind, device = ae.kind, ae.device

        def __init__(self, images):
            self.images, self.at = images, 0

        def decode(self, z):
            self.at += len(z)
            return self.images[self.at - len(z):self.at]

    lossless = floors.reconstruction_floor(data, "shapes", "test", real_f, net, Codec(other), bootstrap=0)
    black = floors.reconstruction_floor(data, "shapes", "test", real_f, net, Codec(torch.zeros_like(other)), bootstrap=0)
    assert lossless["fid"] == pytest.approx(refs["t2i/fid_floor_real"], rel=1e-6)
    assert black["fid"] == pytest.approx(refs["t2i/fid_ref_black"], rel=1e-6)
    recon = floors.reconstruction_floor(data, "shapes", "test", real_f, net, ae, bootstrap=50)
    assert recon["fid_lo"] <= recon["fid"] <= recon["fid_hi"]
    assert floors.main(["--data-dir", str(prepared[0]), "--n", str(n), "--bootstrap", "20"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in records] == ["kl", "vq"] and all(r["n"] == n for r in records)
    for r in records:
        assert r["t2i/fid_floor_recon_lo"] <= r["t2i/fid_floor_recon"] <= r["t2i/fid_floor_recon_hi"]
        assert {"t2i/fid_floor_real", "t2i/fid_ref_random", "t2i/fid_ref_black"} <= set(r)
    assert floors.main(["--data-dir", str(prepared[0]), "--n", str(10 * n)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "lower --n" in err


def test_wilson_and_ratio_intervals():
    lo, hi = wilson(0, 32)
    assert lo == 0.0 and hi == pytest.approx(0.1072, abs=1e-3)
    lo, hi = wilson(16, 32)
    assert (lo, hi) == pytest.approx((0.3364, 0.6636), abs=1e-3)  # the textbook value for 16 of 32
    with pytest.raises(ValueError, match="at least one trial"):
        wilson(0, 0)
    vals = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    point, lo, hi = ratio_interval(vals, torch.ones(400), 300, seed=0)
    assert point == pytest.approx(float(vals.mean())) and lo < point < hi
    assert hi - lo == pytest.approx(2 * 1.96 * float(vals.std()) / 20, rel=0.2)


def test_caption_parser_reads_every_caption_the_world_writes(data):
    meta = data.image_set("shapes", "test")["meta"]
    for m in meta:
        for d in m["captions"]:
            p = parse(d["text"])
            assert p is not None, d["text"]
            # the parse asks nothing the caption's own clauses do not (checked on its scene)
            assert judge(d["text"], scene_objects(m["scene"]))["correct"], d["text"]
    assert parse("a red circle left of a blue square").relations[0].rel == "left of"
    assert parse("three objects").counts[0].exact and not parse("a cross").counts[0].exact
    for bad in ("", "a picture of", "hello world", "a purple circle", "two circles left of a square"):
        assert parse(bad) is None, bad
        assert judge(bad, [])["objects"] is False


def test_true_captions_score_about_one_and_shuffled_ones_much_lower(data):
    held = data.image_set("shapes", "test")
    scenes = [m["scene"] for m in held["meta"]]
    texts = [c for caps in held["captions"] for c in caps]
    own = [s for caps, s in zip(held["captions"], scenes) for _ in caps]
    n = len(scenes)
    other = [scenes[(i + 1) % n] for i, caps in enumerate(held["captions"]) for _ in caps]
    true, shuffled = truth_rates(texts, own), truth_rates(texts, other)
    for a in ("objects", "colours", "positions", "correct"):
        assert true[a] >= 0.99, (a, true)
        assert a not in shuffled or shuffled[a] < 0.6 * true[a], (a, shuffled)
        assert true[f"{a}_lo"] <= true[a] <= true[f"{a}_hi"]
    # a caption that names a wrong colour is right about objects and wrong about colours
    o = scene_objects("3|circle,red,small,0,0;square,blue,large,2,2")
    v = judge("a green circle and a blue square", o)
    assert v["objects"] and v["colours"] is False and v["positions"] is None and not v["correct"]
    assert judge("a red circle above a blue square", o)["positions"] is True
    assert judge("a blue square above a red circle", o)["positions"] is False


def test_geneval_intervals_and_references(data):
    held = data.image_set("shapes", "test")
    prompts = geneval_prompts(held["meta"], 4)
    caps = [c for c, _ in prompts]
    res = geneval_with_intervals(held["images"][[i for _, i in prompts]], caps)
    assert res["overall"] >= 0.99 and res["overall_lo"] < res["overall"] <= res["overall_hi"]
    refs = geneval_references(held["images"], prompts, torch.Generator().manual_seed(0))
    assert refs["overall_ref_true"] >= 0.99 and refs["overall_ref_shuffled"] < 0.8


def _tiny(data) -> Transfusion:
    c, h, _ = data.encoded("shapes", "val", "kl").shape[1:]
    torch.manual_seed(0)
    return Transfusion(TransfusionConfig(backbone=BackboneConfig(dim=32, n_layers=2, n_heads=2),
                                         patch=PatchConfig(latent_channels=c, latent_size=h, patch_size=2,
                                                           timestep_dim=16),
                                         vocab_size=data.tokenizer.vocab_size)).eval()


def test_caption_nll_scores_the_same_tokens_however_examples_are_packed(data):
    model, tok = _tiny(data), data.tokenizer
    lat = data.encoded("shapes", "test", "kl")[:6]
    caps = [torch.tensor(tok.encode(c[0])) for c in data.image_set("shapes", "test")["captions"][:6]]
    examples = [[Image(lat[i]), Text(caps[i])] for i in range(6)] + [[Text(caps[i])] for i in range(6)]
    p = model.cfg.patch.elements_per_image
    with torch.no_grad():
        nats, tokens = _caption_nats(model, TransfusionFamily(model.cfg), rows_batch(examples, tok.special, p), tok.special)
        packed, packed_tokens = _caption_nats(model, TransfusionFamily(model.cfg), pack(examples, 1024, tok.special, p), tok.special)  # one row
    expected = [c.numel() + 1 for c in caps]  # the caption's tokens and EOS, in both layouts
    assert tokens.tolist() == expected * 2 and float(packed_tokens.sum()) == sum(expected) * 2
    assert float(packed.sum()) == pytest.approx(float(nats.sum()), rel=1e-5)
    out = caption_nll(model, TransfusionFamily(model.cfg), lat, caps, tok.special, 4, torch.Generator().manual_seed(0), 50, 0)
    assert out["cond/caption_nll_true_lo"] <= out["cond/caption_nll_true"] <= out["cond/caption_nll_true_hi"]
    assert out["cond/caption_image_gain"] == pytest.approx(
        out["cond/caption_nll_shuffled"] - out["cond/caption_nll_true"], abs=1e-9)
    assert not (derangement(6, torch.Generator().manual_seed(3)) == torch.arange(6)).any()


def test_eps_mse_of_a_model_that_predicts_zero_is_one_at_any_t(data):
    """Zero noise predictions have MSE E[noise^2] = 1 at every t, conditioned or not."""
    model, tok = _tiny(data), data.tokenizer
    with torch.no_grad():
        for p in model.patch_dec.parameters():
            p.zero_()
    lat = data.encoded("shapes", "test", "kl")[:16]
    caps = [torch.tensor(tok.encode(c[0])) for c in data.image_set("shapes", "test")["captions"][:16]]
    out = eps_mse(model, Diffusion(model.cfg.diffusion), lat, caps, tok.special, (100, 900), 8,
                  torch.Generator().manual_seed(0), 50, 0)
    for t in (100, 900):
        assert out[f"cond/eps_mse_cond_t{t}"] == pytest.approx(1.0, abs=0.1)
        assert out[f"cond/eps_text_gain_t{t}"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="outside"):
        eps_mse(model, Diffusion(model.cfg.diffusion), lat, caps, tok.special, (1000,), 8,
                torch.Generator().manual_seed(0), 0, 0)


def test_sampled_latents_respect_the_clamp(data):
    model, tok = _tiny(data), data.tokenizer

    class Recorder:  # stands in for the autoencoder: keeps what it is asked to decode
        device = torch.device("cpu")
        seen: list[torch.Tensor] = []

        def decode(self, z):
            self.seen.append(z)
            return torch.zeros(z.shape[0], 3, 32, 32, dtype=torch.uint8)

    ae = Recorder()
    caps = [torch.tensor(tok.encode("a red circle"))] * 3
    for clip in (None, 0.25):
        sample_images(model, TransfusionFamily(model.cfg), ae, caps, tok.special,
                      ImageSampling(cfg_scale=3.0, steps=4, clip_x0=clip), torch.Generator().manual_seed(0), 2)
    unclamped, clamped = torch.cat(ae.seen[:2]), torch.cat(ae.seen[2:])
    assert float(clamped.abs().max()) <= 0.25 + 1e-5 < float(unclamped.abs().max())


def test_integer_tuples_parse_on_the_command_line():
    from evals.harness import EvalConfig
    from grid.evaluate import apply_overrides

    cfg = apply_overrides(EvalConfig(), ["cond_timesteps=100, 900", "clip_x0=0"])
    assert cfg.cond_timesteps == (100, 900) and cfg.clip_x0 == 0.0
    with pytest.raises(ValueError, match="cond_timesteps: expected int"):
        apply_overrides(EvalConfig(), ["cond_timesteps=100,late"])
