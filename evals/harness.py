"""One evaluation harness for both families (../shared/paper-notes.md, "Evaluation protocol"):

    out = evaluate(model, family, data, "shapes", EvalConfig())   # {"text_c4/ppl": ..., ...}

benchmark  keys                                             paper (Table 3)         demo default
text       text_<role>/{ppl,bpb,nll,tokens}, ppl_ref_unigram C4, Wiki: 20M tokens    8,192 tokens per corpus
caption    caption/{cider,bleu4,rougeL,distinct,parsed},    COCO Karpathy test: 5k  1,000 images, greedy,
           caption/{objects,colours,positions,correct}                              24 tokens
fid        t2i/{fid,kid} (+ t2i/fid_inception)              COCO val: 30k captions  1,000 images against
           t2i/{fid,kid}_{floor_real,ref_random,ref_black}                          1,000 test images
geneval    t2i/geneval_<category>, t2i/geneval_overall      GenEval (7B only)       32 prompts per category
cond       cond/caption_nll_{true,shuffled,none},           -                       500 images,
           cond/caption_image_gain, cond/eps_mse_{cond,uncond}_t<t>,                t = 100, 500, 900
           cond/eps_text_gain_t<t> (Transfusion)
clip       t2i/clip_score (needs clip_checkpoint)           COCO val: 30k           the FID images
lm_eval    lm_eval/<task>/<metric>, lm_eval/mean_acc        Llama-2 suite, 0-shot   off (needs lm_eval_tasks)

Every metric comes with its 95% interval (<key>_lo, <key>_hi) and its references at the same
sample size (<key>_floor_real, <key>_ref_<name>): the key scheme and the interval methods are in
evals/intervals.py, the FID/KID floors in evals/floors.py, the caption parser in
evals/caption_truth.py, the diagnostics in evals/conditioning.py.

Images are sampled with guidance cfg_scale (paper: 5 for the family comparison, 3 for the
ablations) and, for Transfusion, `sampler` over `sampler_steps` steps (paper: 250; the demo uses
DDIM 25) with x0_hat clamped to the autoencoder's latent range (evals/sampling.py; clip_x0).
Held-out images come from `split` ("test"; the trainer's own held-out losses use val). Their
references follow the run's caption policy (`captions`, data/stream_config.py), as it trained:
captions after an image (the caption benchmark's references, the caption NLL diagnostic) are
each image's first caption under "first" and "describe"; captions before an image (FID prompts,
the eps diagnostic) are its first under "first" and any of them otherwise. GenEval's prompts
are its own categories whatever the policy.
"meta/..." keys are records, not results: the FID network's hash, the resolved config, the
clamp, per-benchmark seconds, and meta/t2i_protocol (T2I_PROTOCOL: "2" since the sampler clamp,
the 1,000-image FID/KID and the floors; results without it came from the faulty sampler of
issue 11 and analysis drops their t2i/* values). Every benchmark draws from its own generator
seeded from (seed, benchmark), so a value does not depend on which other benchmarks ran; the
caller's global RNG, the model's train/eval mode and torch's thread count are restored on exit.

Budget, measured on this suite's shared 2-core CPU machine with cpu-0.8M runs trained on
D = 300k, defaults (1,000 FID/KID images, 1,000 captions, 32 GeneVal prompts per category, 500
diagnostic pairs, 200 bootstrap resamples, one intra-op thread):
    Transfusion  52.8 s at load ~4 (other jobs running), 40.4 s at load ~3: text 1.3, caption 2.4,
                 fid 36.4 (sampling 1,000 images is ~35 of it; features and FID/KID with intervals
                 0.5), geneval 7.6, cond 5.1
    Chameleon    39.4 s at load ~4.5: text 1.9, caption 7.1, fid 20.1, geneval 5.1, cond 5.2
With torch's default two threads the same runs took 255-312 s and 185 s (`threads` explains
why). The first evaluation in a fresh data directory also trains the FID network (~13 s) and
computes the floors (~2 s), once.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import zlib
from collections import Counter
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data.embedded import EmbeddedData
from data.stream_config import CAPTION_CHOICES
from evals import captions as captions_mod
from evals import compositional, conditioning, distances, floors, fid as fid_mod, text as text_mod
from evals.caption_truth import truth_rates
from evals.config import EvalConfig
from evals.sampling import sample_captions, sample_images
from model.family import Family, ImageSampling

T2I_PROTOCOL = "2"  # bump when text -> image numbers stop being comparable with earlier ones


def latent_range(data: EmbeddedData, dataset: str) -> float:
    """max |latent| over the KL-encoded training images: the clamp for x0_hat (evals/sampling.py)."""
    return float(data.encoded(dataset, "train", "kl").abs().max())


class _Context:
    """What the benchmarks of one `evaluate` call share: the model, the data, lazily loaded
    held-out images and autoencoder, and the text -> image samples (FID and CLIP use the same)."""

    def __init__(self, model: nn.Module, family: Family, data: EmbeddedData, dataset: str,
                 cfg: EvalConfig, log: Callable[[str], None], clip_x0: float | None, captions: str) -> None:
        self.model, self.family, self.data, self.dataset, self.captions = model, family, data, dataset, captions
        self.cfg, self.log = cfg, log
        self.device = next(model.parameters()).device
        self.tok = data.tokenizer
        self._held_out: dict | None = None
        self._autoencoder = None
        self.t2i: tuple[torch.Tensor, list[str]] | None = None
        self.how = ImageSampling(cfg.cfg_scale, cfg.sampler, cfg.sampler_steps, cfg.code_temperature, clip_x0=clip_x0)

    @property
    def held_out(self) -> dict:
        if self._held_out is None:
            self._held_out = self.data.image_set(self.dataset, self.cfg.split)
        return self._held_out

    def after_image(self) -> list[list[str]]:
        """Each held-out image's references as captions that follow it (the caption policy)."""
        refs = self.held_out["captions"]
        return [r[:1] for r in refs] if self.captions in ("first", "describe") else refs

    def before_image(self) -> list[list[str]]:
        """Each held-out image's references as prompts that precede it (the caption policy)."""
        refs = self.held_out["captions"]
        return [r[:1] for r in refs] if self.captions == "first" else refs

    @property
    def autoencoder(self):
        if self._autoencoder is None:
            self._autoencoder = self.data.autoencoder(self.dataset, self.family.image_kind).to(self.device)
        return self._autoencoder

    @property
    def scenes(self) -> list[str] | None:
        """The held-out images' scene graphs (shapes), or None (a dataset without them)."""
        meta = self.held_out["meta"]
        return [m["scene"] for m in meta] if meta and "scene" in meta[0] else None

    def seed(self, benchmark: str) -> int:
        return self.cfg.seed * 1_000_003 + zlib.crc32(benchmark.encode())

    def generator(self, benchmark: str, device: torch.device | str | None = None) -> torch.Generator:
        return torch.Generator(device or self.device).manual_seed(self.seed(benchmark))

    def bar(self, desc: str, total: int) -> tqdm:
        return tqdm(total=total, desc=f"[eval] {desc}", file=sys.stderr, leave=False, disable=not self.cfg.progress)

    def images_for(self, prompts: list[str], desc: str, benchmark: str) -> torch.Tensor:
        """uint8 images [N, 3, H, W], one per prompt text."""
        ids = [torch.tensor(self.tok.encode(p), dtype=torch.long) for p in prompts]
        with self.bar(desc, len(ids)) as bar:
            return sample_images(self.model, self.family, self.autoencoder, ids, self.tok.special, self.how,
                                 self.generator(benchmark), self.cfg.sample_batch_size, bar.update)

    def t2i_samples(self) -> tuple[torch.Tensor, list[str]]:
        """(images [N, 3, H, W], prompts) for FID and CLIP: one reference caption per held-out
        image, drawn at random (the COCO protocol's random captions), then sampled."""
        if self.t2i is None:
            refs = self.before_image()[:self.cfg.t2i_images]
            rng = np.random.default_rng(self.cfg.seed)
            prompts = [r[int(rng.integers(len(r)))] for r in refs]
            self.t2i = (self.images_for(prompts, "text->image", "t2i"), prompts)
        return self.t2i


def _text(ctx: _Context) -> dict:
    out, token_bytes = {}, ctx.tok.token_bytes()
    for role in ("c4", "wiki"):
        name = f"heldout_{role}"
        if not ctx.data.has_text(name):
            continue  # a data directory without that corpus (the tiny test data has no c4)
        docs = text_mod.heldout_documents(ctx.data.text_shards(name).documents(), ctx.cfg.text_tokens)
        n_pieces = sum(-(-x.numel() // ctx.cfg.text_context) for x in docs)
        with ctx.bar(f"text {role}", n_pieces) as bar:
            res = text_mod.perplexity(ctx.model, docs, ctx.tok.special.bos, token_bytes, ctx.cfg.text_context,
                                      ctx.cfg.batch_size, bar.update)
        out.update({f"text_{role}/{k}": v for k, v in res.items() if k != "bytes"})
        # The best context-free model of these very tokens: a model must use context to beat it.
        out[f"text_{role}/ppl_ref_unigram"] = text_mod.unigram_perplexity(docs)
    return out


def _references(pick: Callable[[int], list[str]], n: int) -> tuple[list[str], list[int]]:
    """(caption texts, index of the image each belongs to) for pick(i) = captions of image i."""
    texts, owner = [], []
    for i in range(n):  # per image: a handful of references each
        caps = pick(i)
        texts += caps
        owner += [i] * len(caps)
    return texts, owner


def _caption(ctx: _Context) -> dict:
    n = min(ctx.cfg.caption_images, len(ctx.held_out["captions"]))
    encoded = ctx.data.encoded(ctx.dataset, ctx.cfg.split, ctx.family.image_kind)[:n]
    with ctx.bar("caption", n) as bar:
        ids = sample_captions(ctx.model, ctx.family, encoded.to(ctx.device), ctx.tok.special, ctx.cfg.caption_tokens,
                              ctx.generator("caption"), ctx.cfg.sample_batch_size, bar.update)
    texts = [ctx.tok.decode(x, skip_special=True) for x in ids]
    refs = ctx.after_image()[:n]
    # Chance references: a caption of another image, and the most common reference for every
    # image (a weak model's strategy; CIDEr gives it ~0.8 on shapes).
    perm = conditioning.derangement(n, ctx.generator("caption_ref", "cpu")).tolist()
    rng = np.random.default_rng(ctx.seed("caption_ref"))
    shuffled = [refs[perm[i]][int(rng.integers(len(refs[perm[i]])))] for i in range(n)]
    constant = Counter(r for rs in refs for r in rs).most_common(1)[0][0]
    scores = captions_mod.caption_scores_many({"": texts, "shuffled": shuffled, "constant": [constant] * n}, refs)
    out = {f"caption/{k}": v for k, v in scores[""].items()}
    out |= {f"caption/cider_ref_{name}": scores[name]["cider"] for name in ("shuffled", "constant")}
    # A weak model often writes one caption for every image; CIDEr alone hides that.
    out |= {"caption/distinct": len(set(texts)) / max(1, len(texts)), "meta/caption_example": texts[0]}
    scenes = ctx.scenes
    if scenes is not None:  # shapes: score what the captions say against the scene graphs
        scenes = scenes[:n]
        out |= {f"caption/{k}": v for k, v in truth_rates(texts, scenes).items()}
        own, owner = _references(lambda i: refs[i], n)
        other, other_owner = _references(lambda i: refs[perm[i]], n)
        for name, (t, s) in {"true": (own, [scenes[i] for i in owner]),
                             "shuffled": (other, [scenes[i] for i in other_owner]),
                             "constant": ([constant] * n, scenes)}.items():
            out |= {f"caption/{k}_ref_{name}": v for k, v in truth_rates(t, s).items()
                    if k != "parsed" and not k.endswith(("_lo", "_hi"))}
    return out


def _fid(ctx: _Context) -> dict:
    fake, _ = ctx.t2i_samples()
    real = ctx.held_out["images"][:fake.shape[0]]
    net, tag = fid_mod.feature_network(ctx.data, ctx.dataset, log=ctx.log)
    net = net.to(ctx.device)
    bs = ctx.cfg.sample_batch_size
    real_f = fid_mod.features(real, net, bs)
    out = distances.fid_kid(real_f, fid_mod.features(fake, net, bs), ctx.cfg.bootstrap, ctx.seed("fid"), "t2i/")
    out |= floors.reference_floors(ctx.data, ctx.dataset, ctx.cfg.split, real_f, net, tag, ctx.autoencoder, bs,
                                   ctx.cfg.bootstrap, ctx.log)
    out["meta/fid_network"] = tag
    if ctx.cfg.inception_weights:
        out["t2i/fid_inception"] = fid_mod.inception_fid(real, fake, ctx.cfg.inception_weights)
    return out


def _geneval(ctx: _Context) -> dict:
    meta = ctx.held_out["meta"]
    if not meta or "captions" not in meta[0]:
        ctx.log(f"[eval] geneval: skipped ({ctx.dataset} has no compositional prompts; shapes only)")
        return {}
    prompts = compositional.geneval_prompts(meta, ctx.cfg.geneval_per_category)
    images = ctx.images_for([c.text for c, _ in prompts], "geneval", "geneval")
    scores = compositional.geneval_with_intervals(images, [c for c, _ in prompts])
    scores |= compositional.geneval_references(ctx.held_out["images"], prompts, ctx.generator("geneval_ref", "cpu"))
    return {f"t2i/geneval_{k}": v for k, v in scores.items()}


def _cond(ctx: _Context) -> dict:
    n = min(ctx.cfg.cond_images, len(ctx.held_out["captions"]))
    encoded = ctx.data.encoded(ctx.dataset, ctx.cfg.split, ctx.family.image_kind)[:n]

    def draw(refs: list[list[str]]) -> list[torch.Tensor]:  # one reference per image, the same draws
        rng = np.random.default_rng(ctx.seed("cond"))
        return [torch.tensor(ctx.tok.encode(r[int(rng.integers(len(r)))]), dtype=torch.long) for r in refs[:n]]

    after, before = draw(ctx.after_image()), draw(ctx.before_image())
    m, c, special, family = ctx.model, ctx.cfg, ctx.tok.special, ctx.family
    gen = ctx.generator("cond", "cpu")
    with ctx.bar("conditioning", 1) as bar:
        out = conditioning.caption_nll(m, family, encoded, after, special, c.sample_batch_size, gen, c.bootstrap,
                                       ctx.seed("cond"))
        if family.diffusion is not None:  # a family that learns images by diffusion
            out |= conditioning.eps_mse(m, family.diffusion, encoded, before, special, tuple(c.cond_timesteps),
                                        c.sample_batch_size, gen, c.bootstrap, ctx.seed("cond"))
        bar.update(1)
    return out


def _clip(ctx: _Context) -> dict:
    from evals.clip import clip_score

    images, prompts = ctx.t2i_samples()
    return {"t2i/clip_score": clip_score(images, prompts, ctx.cfg.clip_checkpoint, ctx.cfg.batch_size)}


def _lm_eval(ctx: _Context) -> dict:
    from evals.lm_eval_adapter import run_lm_eval

    c = ctx.cfg
    return run_lm_eval(ctx.model, ctx.family, ctx.tok, c.lm_eval_tasks, c.lm_eval_include or None, c.lm_eval_limit or None,
                       c.text_context, c.batch_size, seed=c.seed)


_RUNNERS = {"text": _text, "caption": _caption, "fid": _fid, "geneval": _geneval, "cond": _cond, "clip": _clip,
            "lm_eval": _lm_eval}


def _brief(res: dict) -> str:
    return " ".join(f"{k.split('/', 1)[-1]}={v:.4g}" for k, v in res.items()
                    if isinstance(v, float) and not k.startswith("meta/") and not k.endswith(("_lo", "_hi")))


def evaluate(model: nn.Module, family: Family, data: EmbeddedData, dataset: str,
             cfg: EvalConfig | None = None, log: Callable[[str], None] | None = None, captions: str = "all") -> dict:
    """Run cfg.benchmarks on a model of `family` (model/family.py) and return flat
    {key: value}: floats, plus records under "meta/". `captions`: the run's caption policy."""
    cfg = cfg or EvalConfig()
    cfg.validate()
    if captions not in CAPTION_CHOICES:
        raise ValueError(f"captions={captions!r}: valid: {', '.join(CAPTION_CHOICES)}")
    if log is None:
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if cfg.progress else (lambda s: None)
    samples_images = bool({"fid", "geneval", "clip"} & set(cfg.benchmarks))
    out: dict = {"meta/eval_config": json.dumps(dataclasses.asdict(cfg), sort_keys=True),
                 "meta/t2i_protocol": T2I_PROTOCOL}
    clip_x0 = None
    if family.diffusion is not None and samples_images:  # the clamp is on diffusion's x0_hat
        clip_x0 = latent_range(data, dataset) if cfg.clip_x0 < 0 else (cfg.clip_x0 or None)
        out["meta/clip_x0"] = clip_x0 if clip_x0 is not None else "off"
    ctx = _Context(model, family, data, dataset, cfg, log, clip_x0, captions)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(cfg.seed)  # anything not on a benchmark generator is seeded too
            for name in cfg.benchmarks:
                start = time.time()
                res = _RUNNERS[name](ctx)
                seconds = time.time() - start
                out.update(res)
                out[f"meta/seconds_{name}"] = round(seconds, 2)
                log(f"[eval] {name}: {seconds:.1f} s {_brief(res)}")
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return out
