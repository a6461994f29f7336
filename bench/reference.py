"""The shared reference workload, one training step taken apart:

    python -m bench.reference [--threads 1,2] [--steps 20] [--lucidrains]

Workload (issue 13): dim 256, depth 4, 4 heads of 64, 256 text ids; batch 8 rows, each one
example of 32 text tokens and one 4x16x16 latent in 2x2 patches (64 patches): BOS, caption,
BOI, patches, EOI, EOS = 100 elements a row, 800 a batch; fp32 AdamW as the trainer builds it
(grid/train.py: decay on matrices only, gradient clipping at 1).

Per thread count it prints one JSON object: elements/s, the median step time and its split
into data loading (drawing the examples), packing (data/sequences.Packer), mask building
(the model's attention mask, timed on its own and taken out of the forward), forward, backward
and optimizer (clipping included); MFU as 6N (non-embedding N) and with the head and attention
FLOPs (model/accounting.py) over the fp32 matmul peak measured in the same process at the
same thread count (bench/peak.py). With --lucidrains and transfusion-pytorch installed, the
same shapes through lucidrains' Transfusion in the same process, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from bench.common import SPECIAL, random_text, to_json_floats
from grid.machine import measure_matmul_peak
from data.sequences import Packer
from grid.train import optimizer_for
from model.accounting import flops_per_element
from model.backbone import BackboneConfig
from model.batch import Image
from model.family import combine
from model.patches import PatchConfig
from model.spec import TransfusionFamily
from model.transfusion import TransfusionConfig

ROWS, CAPTION, SEQ_LEN = 8, 32, 100  # 1 + 32 + 1 + 64 + 1 + 1 elements a row


def reference_config() -> TransfusionConfig:
    return TransfusionConfig(backbone=BackboneConfig(dim=256, n_layers=4, n_heads=4),
                             patch=PatchConfig(latent_channels=4, latent_size=16, patch_size=2), vocab_size=256)


def _examples(g: torch.Generator, cfg: TransfusionConfig) -> list:
    p = cfg.patch
    return [[random_text(g, cfg.vocab_size, CAPTION, CAPTION),
             Image(torch.randn(p.latent_channels, p.latent_size, p.latent_size, generator=g))] for _ in range(ROWS)]


def _split_step(model, family, opt, g: torch.Generator, gen: torch.Generator) -> dict[str, float]:
    """One training step, timed in parts (seconds)."""
    t0 = time.perf_counter()
    examples = _examples(g, family.cfg)
    t1 = time.perf_counter()
    packer = Packer(SEQ_LEN, SPECIAL, family.elements_per_image)
    for ex in examples:
        packer.add(ex)
    batch = packer.pop(ROWS)
    t2 = time.perf_counter()
    model.attention_mask(batch.doc_id, batch.image_id)  # what the forward builds first
    t3 = time.perf_counter()
    loss, _ = combine(family.loss_terms(model, batch, family.draw(batch, gen)), family.weights)
    t4 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t5 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    t6 = time.perf_counter()
    mask = t3 - t2
    return {"data_s": t1 - t0, "pack_s": t2 - t1, "mask_s": mask, "forward_s": t4 - t3 - mask,
            "backward_s": t5 - t4, "optimizer_s": t6 - t5, "step_s": t6 - t0 - mask, "elements": batch.num_elements}


def bench_suite(threads: int, steps: int, warmup: int, peak: float) -> dict:
    cfg = reference_config()
    family = TransfusionFamily(cfg)
    torch.manual_seed(0)
    model = family.build().train()
    opt = optimizer_for(model, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(warmup):
        _split_step(model, family, opt, g, gen)
    parts = [_split_step(model, family, opt, g, gen) for _ in range(steps)]
    med = {k: statistics.median(p[k] for p in parts) for k in parts[0] if k != "elements"}
    elements = parts[0]["elements"]
    rate = elements / med["step_s"]
    flops = flops_per_element(cfg, SEQ_LEN)
    overhead = med["data_s"] + med["pack_s"] + med["mask_s"]
    return {"impl": "suite", "threads": threads, "elements_per_step": elements, "elements_per_s": rate,
            "mfu": flops["six_n"] * rate / peak, "mfu_with_attention": flops["with_attention"] * rate / peak,
            "overhead_fraction": overhead / med["step_s"], **med, "peak_flops": peak}


def bench_lucidrains(threads: int, steps: int, warmup: int, peak: float) -> dict:
    """lucidrains/transfusion-pytorch on the same shapes: each image as 64 patch vectors of
    2*2*4 = 16 values (its own patching is the same linear map), 32 caption ids before it."""
    from transfusion_pytorch import Transfusion as Lucid

    torch.manual_seed(0)
    model = Lucid(num_text_tokens=256, dim_latent=16, modality_default_shape=(64,),
                  transformer=dict(dim=256, depth=4, heads=4, dim_head=64)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        data = [[torch.randint(5, 256, (CAPTION,), generator=g), torch.randn(64, 16, generator=g)] for _ in range(ROWS)]
        loss = model(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    elements = ROWS * SEQ_LEN
    flops = flops_per_element(reference_config(), SEQ_LEN)
    return {"impl": "lucidrains/transfusion-pytorch", "threads": threads, "elements_per_s": elements / step_s,
            "step_s": step_s, "mfu": flops["six_n"] * elements / step_s / peak, "peak_flops": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lucidrains", action="store_true", help="also time lucidrains' Transfusion (if installed)")
    args = ap.parse_args(argv)
    caller_threads = torch.get_num_threads()
    try:
        _run(args)
    finally:  # a caller in the same process (a test) keeps its own thread count
        torch.set_num_threads(caller_threads)
    return 0


def _run(args: argparse.Namespace) -> None:
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        peak = measure_matmul_peak("cpu", torch.float32)
        suite = bench_suite(threads, args.steps, args.warmup, peak)
        print(json.dumps(to_json_floats(suite)), flush=True)
        if args.lucidrains:
            try:
                other = bench_lucidrains(threads, max(3, args.steps // 4), 1, peak)
            except ImportError:
                print(json.dumps({"impl": "lucidrains/transfusion-pytorch", "skipped": "not installed "
                                  "(pip install transfusion-pytorch==0.19.4)"}), flush=True)
                continue
            other["suite_speedup"] = suite["elements_per_s"] / other["elements_per_s"]
            print(json.dumps(to_json_floats(other)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
