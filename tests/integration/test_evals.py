"""The evaluation harness: each metric against a known answer, and `evaluate` on both families.

FID of a set against itself is ~0 and grows with noise (more in tests/integration/test_evals_metrics.py); CIDEr of references against themselves
is high and of shuffled captions low; a briefly trained model's perplexity beats the unigram
perplexity of the same text and it ranks real continuations above reversed ones through
lm_eval; the shapes checker passes ground-truth images and fails noise. All on the tiny
prepared data (tests/conftest.py `prepared`).
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from baselines.chameleon import Chameleon, ChameleonConfig
from data.embedded import EmbeddedData
from evals import fid as fid_mod
from evals.captions import caption_scores
from evals.compositional import geneval_prompts, geneval_scores
from evals.harness import T2I_PROTOCOL, EvalConfig, evaluate
from evals.text import heldout_documents, next_token_logprobs, perplexity, score_pieces, unigram_perplexity, windows
from model.backbone import BackboneConfig
from baselines.spec import ChameleonFamily
from model.spec import TransfusionFamily
from model.patches import PatchConfig
from model.transfusion import Transfusion, TransfusionConfig
from data.shapes import GENEVAL_CATEGORIES


@pytest.fixture(scope="module")
def data(prepared) -> EmbeddedData:
    return EmbeddedData(prepared[0])


@pytest.fixture(scope="module")
def fid_net(data):
    """The shapes FID network of the tiny data, trained briefly (the default recipe is for
    the real data) and saved where `evaluate` looks for it."""
    return fid_mod.feature_network(data, "shapes", fid_mod.FeatureNetConfig(steps=40, batch=32))


def _transfusion(data: EmbeddedData, dim: int = 32, seed: int = 0) -> Transfusion:
    c, h, _ = data.encoded("shapes", "val", "kl").shape[1:]
    torch.manual_seed(seed)
    return Transfusion(TransfusionConfig(backbone=BackboneConfig(dim=dim, n_layers=2, n_heads=2),
                                         patch=PatchConfig(latent_channels=c, latent_size=h, patch_size=2,
                                                           timestep_dim=16),
                                         vocab_size=data.tokenizer.vocab_size))


def _chameleon(data: EmbeddedData) -> Chameleon:
    torch.manual_seed(0)
    return Chameleon(ChameleonConfig(backbone=BackboneConfig(dim=32, n_layers=2, n_heads=2, qk_norm=True),
                                     text_vocab_size=data.tokenizer.vocab_size,
                                     codebook_size=data.autoencoder("shapes", "vq").codebook_size,
                                     code_grid=data.encoded("shapes", "val", "vq").shape[1]))


@pytest.fixture(scope="module")
def text_model(data) -> Transfusion:
    """A tiny Transfusion trained for a few seconds on the training text only."""
    model = _transfusion(data, dim=64)
    train = torch.from_numpy(np.asarray(data.text_shards("train").shard(0).tokens, dtype=np.int64))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        starts = torch.randint(0, train.numel() - 65, (16,), generator=gen)
        rows = torch.stack([train[s:s + 65] for s in starts.tolist()])
        logp, _ = next_token_logprobs(model, rows[:, :-1], rows[:, 1:], torch.ones(16, 64, dtype=torch.bool))
        opt.zero_grad()
        (-logp.mean()).backward()
        opt.step()
    return model.eval()


def _noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_fid_of_a_set_against_itself_is_zero_and_grows_monotonically_with_noise(data, fid_net):
    net, _ = fid_net
    real = torch.cat([data.image_set("shapes", s)["images"] for s in ("val", "test")])
    values = [fid_mod.fid(real, _noisy(real, sigma), net) for sigma in (0, 8, 24, 64, 128)]
    assert abs(values[0]) < 1e-3
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_fid_network_is_trained_once_and_its_hash_reported(data, fid_net):
    net, tag = fid_net
    path = fid_mod.network_path(data, "shapes")
    before = path.read_bytes()
    again, tag_again = fid_mod.feature_network(data, "shapes")  # the default recipe does not retrain it
    assert tag_again == tag and path.read_bytes() == before
    assert tag.startswith("shapes-fid-v1:") and tag.split(":")[1] == fid_mod._sha256(path)[:16]
    x = data.image_set("shapes", "test")["images"][:4]
    assert torch.equal(again(x), net(x)) and again(x).shape == (4, fid_mod.FEATURES)


def test_cider_of_references_is_high_and_of_shuffled_captions_low(data):
    refs = data.image_set("shapes", "test")["captions"]
    own = caption_scores([r[0] for r in refs], refs)
    shuffled = caption_scores([refs[(i + 5) % len(refs)][0] for i in range(len(refs))], refs)
    assert own["cider"] > 2.0 and shuffled["cider"] < own["cider"] / 3
    assert own["bleu4"] > 0.9 and own["rougeL"] > 0.9
    assert shuffled["bleu4"] < own["bleu4"] and shuffled["rougeL"] < own["rougeL"]
    empty = caption_scores(["", "\n"], refs[:2])  # an empty caption scores zero, it does not shift lines
    assert empty["cider"] == 0.0


def test_trained_model_perplexity_is_below_the_unigram_perplexity_of_the_same_text(data, text_model):
    docs = heldout_documents(data.text_shards("heldout_wiki").documents(), 4096)
    res = perplexity(text_model, docs, data.tokenizer.special.bos, data.tokenizer.token_bytes(), context=64)
    assert res["tokens"] == 4096
    assert res["ppl"] < 0.8 * unigram_perplexity(docs)
    assert res["bpb"] == pytest.approx(res["nll"] * res["tokens"] / (math.log(2) * res["bytes"]))


def test_windows_predict_every_token_once_and_padding_changes_nothing(data):
    doc = torch.arange(10, 110)
    pieces = windows(doc, bos=1, context=32)
    assert torch.equal(torch.cat([y for _, y in pieces]), doc) and [x.numel() for x, _ in pieces] == [32, 32, 32, 4]
    model = _transfusion(data).eval()
    with torch.no_grad():
        one = score_pieces(model, pieces, batch_size=1, device=torch.device("cpu"))
        batched = score_pieces(model, pieces, batch_size=4, device=torch.device("cpu"))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(one, batched))


def test_compositional_accuracy_of_ground_truth_images_is_near_one_and_of_noise_near_chance(data):
    held = data.image_set("shapes", "test")
    prompts = geneval_prompts(held["meta"], n_per_category=8)
    assert {c.category for c, _ in prompts} == set(GENEVAL_CATEGORIES)
    truth = geneval_scores(held["images"][[i for _, i in prompts]], [c for c, _ in prompts])
    assert truth["overall"] >= 0.99 and min(truth[c] for c in GENEVAL_CATEGORIES) >= 0.99
    noise = torch.randint(0, 256, (len(prompts), 3, 32, 32), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    assert geneval_scores(noise, [c for c, _ in prompts])["overall"] <= 0.05


@pytest.mark.parametrize("family", ["transfusion", "chameleon"])
def test_evaluate_runs_every_benchmark_deterministically_and_leaves_the_caller_alone(data, fid_net, family):
    model = _transfusion(data) if family == "transfusion" else _chameleon(data)
    spec = (TransfusionFamily if family == "transfusion" else ChameleonFamily)(model.cfg)
    cfg = EvalConfig(batch_size=4, sample_batch_size=4, text_tokens=256, caption_images=4, caption_tokens=6,
                     t2i_images=4, geneval_per_category=1, cond_images=4, bootstrap=20, sampler_steps=3,
                     progress=False, threads=3 - min(torch.get_num_threads(), 2))  # not the caller's count
    model.train()
    torch.manual_seed(123)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    out = evaluate(model, spec, data, "shapes", cfg)
    assert torch.equal(torch.get_rng_state(), rng) and model.training and torch.get_num_threads() == threads
    again = evaluate(model, spec, data, "shapes", cfg)
    timeless = lambda d: {k: v for k, v in d.items() if not k.startswith("meta/seconds")}  # noqa: E731
    assert timeless(out) == timeless(again)
    numbers = {k: v for k, v in out.items() if not k.startswith("meta/")}
    expected = {"text_wiki/ppl", "text_wiki/bpb", "text_wiki/ppl_ref_unigram", "caption/cider", "caption/bleu4",
                "caption/rougeL", "caption/distinct", "caption/parsed", "caption/cider_ref_shuffled",
                "caption/cider_ref_constant", "caption/objects", "caption/objects_lo", "caption/objects_ref_true",
                "caption/objects_ref_shuffled", "t2i/geneval_overall", "t2i/geneval_overall_lo",
                "t2i/geneval_overall_ref_shuffled", "t2i/geneval_counting_hi", "cond/caption_nll_true",
                "cond/caption_nll_shuffled", "cond/caption_nll_none", "cond/caption_image_gain_lo"}
    expected |= {f"t2i/{m}{s}" for m in ("fid", "kid") for s in ("", "_lo", "_hi", "_floor_real", "_ref_random",
                                                                    "_ref_black")}
    if family == "transfusion":
        expected |= {f"cond/eps_{k}_t{t}" for k in ("mse_cond", "mse_uncond", "text_gain") for t in (100, 500, 900)}
    assert expected <= set(numbers), expected - set(numbers)
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers.values()), numbers
    assert out["meta/fid_network"] == fid_net[1] and json.loads(out["meta/eval_config"])["cfg_scale"] == 5.0
    assert out["meta/t2i_protocol"] == T2I_PROTOCOL == "2"
    for key in ("t2i/fid", "t2i/kid", "t2i/geneval_overall", "caption/objects"):
        assert out[f"{key}_lo"] <= out[key] <= out[f"{key}_hi"], key
    if family == "transfusion":  # the sampler's clamp is the KL latents' own range
        assert out["meta/clip_x0"] == pytest.approx(float(data.encoded("shapes", "train", "kl").abs().max()))
    else:
        assert "meta/clip_x0" not in out
    # Each benchmark has its own generator: running one alone gives the same value.
    alone = evaluate(model, spec, data, "shapes", EvalConfig(**{**cfg.__dict__, "benchmarks": ("geneval",)}))
    assert alone["t2i/geneval_overall"] == out["t2i/geneval_overall"]


def test_eval_config_rejects_unknown_benchmarks_and_missing_paths():
    with pytest.raises(ValueError, match="unknown benchmark"):
        EvalConfig(benchmarks=("text", "bleu")).validate()
    with pytest.raises(ValueError, match="bootstrap"):
        EvalConfig(bootstrap=-1).validate()
    with pytest.raises(ValueError, match="t2i_images"):
        EvalConfig(t2i_images=1).validate()
    defaults = EvalConfig()  # the issue-11 floor: metrics with power by default
    assert defaults.t2i_images >= 1000 and defaults.geneval_per_category >= 32 and "cond" in defaults.benchmarks
    with pytest.raises(ValueError, match="clip_checkpoint"):
        EvalConfig(benchmarks=("clip",)).validate()


def test_lm_eval_ranks_real_continuations_above_reversed_ones(data, text_model, tmp_path):
    pytest.importorskip("lm_eval", reason="lm_eval not installed (pip install -e .[lmeval])")
    from evals.lm_eval_adapter import SuiteLM, run_lm_eval

    tok = data.tokenizer
    rows, rng = [], random.Random(0)
    for doc in heldout_documents(data.text_shards("heldout_wiki").documents(), 20000):
        if doc.numel() >= 24 and len(rows) < 20:
            context, real = tok.decode(doc[:16]), tok.decode(doc[16:24])
            choices = [real, real[::-1]]
            label = rng.randrange(2)
            rows.append({"context": context, "choices": choices if label == 0 else choices[::-1], "label": label})
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(
        "task: toy_continuation\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'toy.jsonl'}\n  cache_dir: {tmp_path / 'hf'}\n"
        "test_split: test\noutput_type: multiple_choice\ntarget_delimiter: ''\n"
        "doc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    out = run_lm_eval(text_model, TransfusionFamily(text_model.cfg), tok, ["toy_continuation"], include_path=str(tmp_path), context=64, seed=0)
    assert out["lm_eval/toy_continuation/acc"] >= 0.8 and out["lm_eval/mean_acc"] == out["lm_eval/toy_continuation/acc"]

    class Req:  # what lm_eval hands the model: .args
        def __init__(self, *args):
            self.args = args

    lm = SuiteLM(text_model, TransfusionFamily(text_model.cfg), tok, context=64)
    (ll, greedy), = lm.loglikelihood([Req(rows[0]["context"], rows[0]["choices"][0])])
    ids = torch.tensor([tok.special.bos] + tok.encode(rows[0]["context"]) + tok.encode(rows[0]["choices"][0]))
    with torch.no_grad():
        logp, _ = next_token_logprobs(text_model, ids[None, :-1], ids[None, 1:], torch.ones(1, ids.numel() - 1,
                                                                                         dtype=torch.bool))
    n = len(tok.encode(rows[0]["choices"][0]))
    assert ll == pytest.approx(float(logp[0, -n:].sum()), abs=1e-4) and isinstance(greedy, bool)
    assert lm.loglikelihood_rolling([Req(rows[0]["context"])])[0] < 0
    assert isinstance(lm.generate_until([Req(rows[0]["context"], {"until": ["\n"], "max_gen_toks": 5})])[0], str)


def test_caption_policy_first_scores_against_each_images_first_caption(data):
    """A run trained on captions="first" is judged on those captions: the caption references,
    the FID prompts and the diagnostics hold each held-out image's first caption only; the
    caption benchmark's chance references are drawn from those too."""
    model = _transfusion(data)
    spec = TransfusionFamily(model.cfg)
    cfg = EvalConfig(benchmarks=("caption",), batch_size=4, sample_batch_size=4, caption_images=16,
                     caption_tokens=4, bootstrap=10, progress=False)
    every, first, describe = (evaluate(model, spec, data, "shapes", cfg, captions=c) for c in ("all", "first", "describe"))
    refs = data.image_set("shapes", "test")["captions"][:16]
    assert all(len(r) > 1 for r in refs)  # the full description first, then one per GenEval category
    # A real caption of another image scored against one reference or all of them: other scores.
    assert every["caption/cider_ref_shuffled"] != first["caption/cider_ref_shuffled"]
    assert every["caption/correct_ref_true"] == first["caption/correct_ref_true"] == 1.0  # true of their scene
    # "describe" captions an image as "first" does (its prompts, before an image, are "all"'s)
    timeless = lambda d: {k: v for k, v in d.items() if not k.startswith("meta/seconds")}  # noqa: E731
    assert timeless(describe) == timeless(first)
    with pytest.raises(ValueError, match="captions='some'"):
        evaluate(model, spec, data, "shapes", cfg, captions="some")
