"""One evaluation harness for both families (../shared/paper-notes.md, "Evaluation protocol"):

    out = evaluate(model, diffusion, data, "shapes", EvalConfig())   # {"text_c4/ppl": ..., ...}

benchmark  keys                                         paper (Table 3)          demo default
text       text_<role>/{ppl,bpb,nll,tokens}             C4, Wiki: 20M tokens     8,192 tokens per corpus
caption    caption/{cider,bleu4,rougeL,distinct}        COCO Karpathy test: 5k   32 images, greedy, 24 tokens
fid        t2i/fid (+ t2i/fid_inception)                COCO val: 30k captions   64 images
geneval    t2i/geneval_<category>, t2i/geneval_overall  GenEval (7B only)        8 prompts per category
clip       t2i/clip_score (needs clip_checkpoint)       COCO val: 30k            the FID images
lm_eval    lm_eval/<task>/<metric>, lm_eval/mean_acc    Llama-2 suite, 0-shot    off (needs lm_eval_tasks)

Images are sampled with guidance cfg_scale (paper: 5 for the family comparison, 3 for the
ablations) and, for Transfusion, `sampler` over `sampler_steps` steps (paper: 250; the demo uses
DDIM 25). Held-out images come from `split` ("test"; the trainer's own held-out losses use val).
"meta/..." keys are strings (the FID network's hash, the resolved config) and per-benchmark
seconds. Every benchmark draws from its own generator seeded from (seed, benchmark), so a value
does not depend on which other benchmarks ran; the caller's global RNG and the model's
train/eval mode are restored on exit.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data.embedded import EmbeddedData
from evals import captions as captions_mod
from evals import compositional, fid as fid_mod, text as text_mod
from evals.sampling import ImageSampling, image_kind, is_chameleon, sample_captions, sample_images
from model.diffusion import Diffusion

BENCHMARKS = ("text", "caption", "fid", "geneval", "clip", "lm_eval")
SAMPLERS = ("ddim", "ddpm")


@dataclass
class EvalConfig:
    """Sample counts default to the CPU demo (about 10 s per cpu-0.8M run, see the module
    docstring); a cluster raises them toward the paper's."""

    seed: int = 0
    batch_size: int = 32  # rows per forward pass / images per sampling call
    benchmarks: tuple[str, ...] = ("text", "caption", "fid", "geneval")
    split: str = "test"  # held-out image split for captioning and text -> image
    text_tokens: int = 8192  # scored per held-out corpus (paper: 20M)
    text_context: int = 256  # window for perplexity (the run's seq_len)
    caption_images: int = 32  # paper: 5,000 (Karpathy test)
    caption_tokens: int = 24  # max new tokens per caption
    t2i_images: int = 64  # FID sample size (paper: 30,000)
    geneval_per_category: int = 8
    cfg_scale: float = 5.0
    sampler: str = "ddim"
    sampler_steps: int = 25  # paper: 250
    code_temperature: float = 1.0  # Chameleon code sampling
    inception_weights: str = ""  # local InceptionV3 weights: adds t2i/fid_inception (needs torch-fidelity)
    clip_checkpoint: str = ""  # local Hugging Face CLIP directory, for the clip benchmark
    lm_eval_tasks: tuple[str, ...] = ()  # e.g. lm_eval_adapter.LLAMA_TASKS
    lm_eval_include: str = ""  # folder of extra lm_eval task YAMLs
    lm_eval_limit: int = 0  # examples per task; 0 = all
    progress: bool = True  # tqdm bars and one line per benchmark on stderr

    def validate(self) -> None:
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        if bad:
            raise ValueError(f"unknown benchmark(s) {bad}; valid: {', '.join(BENCHMARKS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}: expected one of {SAMPLERS}")
        for name in ("batch_size", "text_tokens", "text_context", "caption_images", "caption_tokens",
                     "geneval_per_category", "sampler_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.t2i_images < 2:
            raise ValueError(f"t2i_images={self.t2i_images}: FID needs at least 2 images")
        if "clip" in self.benchmarks and not self.clip_checkpoint:
            raise ValueError("benchmark 'clip' needs clip_checkpoint=<local CLIP directory>")
        if "lm_eval" in self.benchmarks and not self.lm_eval_tasks:
            raise ValueError("benchmark 'lm_eval' needs lm_eval_tasks=<task,task,...>")


class _Context:
    """What the benchmarks of one `evaluate` call share: the model, the data, lazily loaded
    held-out images and autoencoder, and the text -> image samples (FID and CLIP use the same)."""

    def __init__(self, model: nn.Module, diffusion: Diffusion | None, data: EmbeddedData, dataset: str,
                 cfg: EvalConfig, log: Callable[[str], None]) -> None:
        self.model, self.diffusion, self.data, self.dataset = model, diffusion, data, dataset
        self.cfg, self.log = cfg, log
        self.device = next(model.parameters()).device
        self.tok = data.tokenizer
        self._held_out: dict | None = None
        self._autoencoder = None
        self.t2i: tuple[torch.Tensor, list[str]] | None = None
        self.how = ImageSampling(cfg.cfg_scale, cfg.sampler, cfg.sampler_steps, cfg.code_temperature)

    @property
    def held_out(self) -> dict:
        if self._held_out is None:
            self._held_out = self.data.image_set(self.dataset, self.cfg.split)
        return self._held_out

    @property
    def autoencoder(self):
        if self._autoencoder is None:
            self._autoencoder = self.data.autoencoder(self.dataset, image_kind(self.model)).to(self.device)
        return self._autoencoder

    def generator(self, benchmark: str) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(self.cfg.seed * 1_000_003 + zlib.crc32(benchmark.encode()))

    def bar(self, desc: str, total: int) -> tqdm:
        return tqdm(total=total, desc=f"[eval] {desc}", file=sys.stderr, leave=False, disable=not self.cfg.progress)

    def images_for(self, prompts: list[str], desc: str, benchmark: str) -> torch.Tensor:
        """uint8 images [N, 3, H, W], one per prompt text."""
        ids = [torch.tensor(self.tok.encode(p), dtype=torch.long) for p in prompts]
        with self.bar(desc, len(ids)) as bar:
            return sample_images(self.model, self.diffusion, self.autoencoder, ids, self.tok.special, self.how,
                                 self.generator(benchmark), self.cfg.batch_size, bar.update)

    def t2i_samples(self) -> tuple[torch.Tensor, list[str]]:
        """(images [N, 3, H, W], prompts) for FID and CLIP: one reference caption per held-out
        image, drawn at random (the COCO protocol's random captions), then sampled."""
        if self.t2i is None:
            refs = self.held_out["captions"][:self.cfg.t2i_images]
            rng = np.random.default_rng(self.cfg.seed)
            prompts = [r[int(rng.integers(len(r)))] for r in refs]
            self.t2i = (self.images_for(prompts, "text->image", "t2i"), prompts)
        return self.t2i


def _text(ctx: _Context) -> dict:
    out, token_bytes = {}, ctx.tok.token_bytes()
    for role in ("c4", "wiki"):
        name = f"heldout_{role}"
        if not ctx.data.paths.tokens(name).exists():
            continue  # a data directory without that corpus (the tiny test data has no c4)
        src = ctx.data.text_documents(name)
        docs = text_mod.heldout_documents(src.tokens, src.offsets, ctx.cfg.text_tokens)
        n_pieces = sum(-(-x.numel() // ctx.cfg.text_context) for x in docs)
        with ctx.bar(f"text {role}", n_pieces) as bar:
            res = text_mod.perplexity(ctx.model, docs, ctx.tok.special.bos, token_bytes, ctx.cfg.text_context,
                                      ctx.cfg.batch_size, bar.update)
        out.update({f"text_{role}/{k}": v for k, v in res.items() if k != "bytes"})
    return out


def _caption(ctx: _Context) -> dict:
    n = ctx.cfg.caption_images
    encoded = ctx.data.encoded(ctx.dataset, ctx.cfg.split, image_kind(ctx.model))[:n]
    with ctx.bar("caption", encoded.shape[0]) as bar:
        ids = sample_captions(ctx.model, ctx.diffusion, encoded.to(ctx.device), ctx.tok.special, ctx.cfg.caption_tokens,
                              ctx.generator("caption"), ctx.cfg.batch_size, bar.update)
    texts = [ctx.tok.decode(x, skip_special=True) for x in ids]
    scores = captions_mod.caption_scores(texts, ctx.held_out["captions"][:encoded.shape[0]])
    # A weak model often writes one caption for every image; CIDEr alone hides that.
    distinct = len(set(texts)) / max(1, len(texts))
    return ({f"caption/{k}": v for k, v in scores.items()} | {"caption/distinct": distinct,
                                                              "meta/caption_example": texts[0]})


def _fid(ctx: _Context) -> dict:
    fake, _ = ctx.t2i_samples()
    real = ctx.held_out["images"][:fake.shape[0]]
    net, tag = fid_mod.feature_network(ctx.data, ctx.dataset, log=ctx.log)
    out = {"t2i/fid": fid_mod.fid(real, fake, net.to(ctx.device), ctx.cfg.batch_size), "meta/fid_network": tag}
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
    scores = compositional.geneval_scores(images, [c for c, _ in prompts])
    return {f"t2i/geneval_{k}": v for k, v in scores.items()}


def _clip(ctx: _Context) -> dict:
    from evals.clip import clip_score

    images, prompts = ctx.t2i_samples()
    return {"t2i/clip_score": clip_score(images, prompts, ctx.cfg.clip_checkpoint, ctx.cfg.batch_size)}


def _lm_eval(ctx: _Context) -> dict:
    from evals.lm_eval_adapter import run_lm_eval

    c = ctx.cfg
    return run_lm_eval(ctx.model, ctx.tok, c.lm_eval_tasks, c.lm_eval_include or None, c.lm_eval_limit or None,
                       c.text_context, c.batch_size, seed=c.seed)


_RUNNERS = {"text": _text, "caption": _caption, "fid": _fid, "geneval": _geneval, "clip": _clip, "lm_eval": _lm_eval}


def _brief(res: dict) -> str:
    return " ".join(f"{k.split('/', 1)[-1]}={v:.4g}" for k, v in res.items()
                    if isinstance(v, float) and not k.startswith("meta/"))


def evaluate(model: nn.Module, diffusion: Diffusion | None, data: EmbeddedData, dataset: str,
             cfg: EvalConfig | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run cfg.benchmarks on a Transfusion (with its Diffusion) or a Chameleon model (diffusion
    None) and return flat {key: value}: floats, plus strings under "meta/"."""
    cfg = cfg or EvalConfig()
    cfg.validate()
    if log is None:
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if cfg.progress else (lambda s: None)
    if not is_chameleon(model) and diffusion is None and {"fid", "geneval", "clip"} & set(cfg.benchmarks):
        raise ValueError("a Transfusion model needs its Diffusion for the text -> image benchmarks")
    ctx = _Context(model, diffusion, data, dataset, cfg, log)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    was_training = model.training
    out: dict = {"meta/eval_config": json.dumps(dataclasses.asdict(cfg), sort_keys=True)}
    model.eval()
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
    return out
