"""Generation speed with and without the KV cache (model/generate.py), in one process.

    python -m bench.decode [--size cpu-0.8M] [--batch 4] [--prompt-len 64] [--new-tokens 64]
        [--image-steps 50] [--cfg-scale 3] [--repeats 2] [--device cpu|cuda] [--dtype fp32|bf16]

An untrained model (speed does not depend on the weights) decodes, for each of
use_cache=True and use_cache=False:
  text           greedy continuation of `batch` random prompts of prompt-len tokens by exactly
                 new-tokens tokens each -> tokens_per_s (batch * new_tokens / seconds);
  text_to_image  one image per random caption of prompt-len tokens, image-steps DDIM steps with
                 classifier-free guidance (two backbone passes per step unless cfg-scale is 1)
                 -> denoising_steps_per_s (steps of the whole batch) and images_per_s;
  chameleon_text_to_image  the same-sized image from the Chameleon baseline of the same
                 backbone (a code grid of latent-size / patch-size per side, as many codes as
                 Transfusion has patches), sampled code by code with the same guidance
                 -> images_per_s.
Each number is the best of `repeats` timed runs after one short warm-up run. kv_speedup is
cached / uncached throughput: above 1 means the cache pays. Expect it to grow with the prefix
length: a cached text step costs one element against the prefix, an uncached one the whole
sequence; a cached denoising step costs the image's patches, an uncached one also the caption
(and the unconditional context of guidance is only BOS BOI, so it gains nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager

import torch

from bench.common import (DTYPES, SPECIAL, add_common_args, build_config, build_family, random_text, resolve_device,
                          sync, to_json_floats)
from model.batch import Text
from model.diffusion import Diffusion
from model.generate import SamplingConfig, generate, text_to_image
from model.transfusion import Transfusion


@contextmanager
def no_eos(model: Transfusion):
    """Make EOS impossible, so that every row decodes the full token budget. A random model
    would otherwise stop rows at random points and tokens/s would measure the stopping rule.
    (BOI is barred by SamplingConfig.max_images = 0, which keeps the text run text-only.)"""

    def hook(module, inputs, logits):
        return logits.index_fill(-1, torch.tensor([SPECIAL.eos], device=logits.device), float("-inf"))

    handle = model.head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _best_time(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_text(model, diffusion, prompts, args, device) -> dict:
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.0, max_images=0)
    warm = SamplingConfig(max_new_tokens=2, temperature=0.0, max_images=0)
    out = {}
    with no_eos(model):
        for use_cache in (True, False):
            generate(model, diffusion, prompts, SPECIAL, warm, use_cache=use_cache)
            secs, segs = _best_time(lambda: generate(model, diffusion, prompts, SPECIAL, cfg, use_cache=use_cache),
                                    args.repeats, device)
            lengths = {sum(s.ids.numel() for s in row if isinstance(s, Text)) for row in segs}
            if lengths != {args.new_tokens}:  # the bench would be measuring something else
                raise RuntimeError(f"rows decoded {sorted(lengths)} tokens, expected {args.new_tokens}")
            out["cached" if use_cache else "uncached"] = {
                "seconds": secs, "tokens_per_row": args.new_tokens,
                "tokens_per_s": len(prompts) * args.new_tokens / secs}
    out["kv_speedup"] = out["cached"]["tokens_per_s"] / out["uncached"]["tokens_per_s"]
    return out


def bench_chameleon_image(captions, args, device, dtype) -> dict:
    from baselines.generate import ChameleonSamplingConfig
    from baselines.generate import text_to_image as codes_from_text

    family = build_family("chameleon", args.size, args)
    model = family.build().to(device=device, dtype=dtype).eval()
    cfg = ChameleonSamplingConfig(cfg_scale=args.cfg_scale)
    out = {"codes_per_image": family.elements_per_image}
    for use_cache in (True, False):
        codes_from_text(model, captions[:1], SPECIAL, cfg, torch.Generator().manual_seed(0), use_cache)  # warm-up
        secs, _ = _best_time(lambda: codes_from_text(model, captions, SPECIAL, cfg, torch.Generator().manual_seed(0),
                                                     use_cache), args.repeats, device)
        out["cached" if use_cache else "uncached"] = {"seconds": secs, "images_per_s": len(captions) / secs}
    out["kv_speedup"] = out["cached"]["images_per_s"] / out["uncached"]["images_per_s"]
    return out


def bench_image(model, diffusion, captions, args, device) -> dict:
    cfg = SamplingConfig(image_steps=args.image_steps, cfg_scale=args.cfg_scale)
    warm = SamplingConfig(image_steps=2, cfg_scale=args.cfg_scale)
    def run(use_cache: bool, sampling: SamplingConfig):
        return text_to_image(model, diffusion, captions, SPECIAL, sampling, use_cache=use_cache)

    out = {}
    for use_cache in (True, False):
        run(use_cache, warm)
        secs, _ = _best_time(lambda: run(use_cache, cfg), args.repeats, device)
        out["cached" if use_cache else "uncached"] = {
            "seconds": secs, "denoising_steps_per_s": args.image_steps / secs, "images_per_s": len(captions) / secs}
    out["kv_speedup"] = out["cached"]["images_per_s"] / out["uncached"]["images_per_s"]
    out["passes_per_step"] = 1 if args.cfg_scale == 1.0 else 2
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="cpu-0.8M")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--image-steps", type=int, default=50)
    ap.add_argument("--cfg-scale", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    add_common_args(ap)
    args = ap.parse_args(argv)
    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    cfg = build_config(args.size, args)
    model = Transfusion(cfg).to(device=device, dtype=dtype).eval()
    diffusion = Diffusion(cfg.diffusion)
    g = torch.Generator().manual_seed(args.seed)
    texts = [random_text(g, cfg.vocab_size, args.prompt_len, args.prompt_len) for _ in range(args.batch)]
    result = {"size": args.size, "device": str(device), "dtype": args.dtype, "batch": args.batch,
              "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "image_steps": args.image_steps,
              "cfg_scale": args.cfg_scale, "elements_per_image": cfg.patch.elements_per_image,
              "text": bench_text(model, diffusion, [[t] for t in texts], args, device),
              "text_to_image": bench_image(model, diffusion, [t.ids for t in texts], args, device),
              "chameleon_text_to_image": bench_chameleon_image([t.ids for t in texts], args, device, dtype)}
    print(json.dumps(to_json_floats(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
