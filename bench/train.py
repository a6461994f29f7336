"""Training throughput and MFU of each family, per model size, against a text-only baseline.

    python -m bench.train [--families transfusion,chameleon] [--sizes cpu-0.11M,cpu-0.33M,cpu-0.8M]
        [--seq-len 256] [--batch 8] [--steps 10] [--warmup 2] [--threads T] [--device cpu|cuda]
        [--dtype fp32|bf16] [--compile] [--patch linear|unet] [--vocab 2048] [--latent-channels 8]
        [--latent-size 16] [--codebook 512]

For each family and size, one full training step (the family's loss terms forward + backward,
gradient clipping, the trainer's AdamW) is timed on a fixed packed batch of text documents and caption/image pairs,
1:1 by elements (bench/common.make_batch); then the same model on a text-only batch of the
same shape (the plain LM baseline). One JSON object per size:

    N                        the three accounting definitions (model.accounting.param_counts)
    elements_per_s, step_s   non-pad elements (D) per second; median step seconds
    mfu_six_n                6 * n_nonembedding FLOPs per element * rate / measured peak: the
                             scaling law's compute convention
    mfu_with_attention       + output head + dense attention (model.accounting.element_flops);
                             closer to the work done (the head runs only at text targets, so
                             for mixed batches it overcounts a little)
    text_only                the same numbers for the text-only batch
    speed_vs_text_only       elements/s mixed / text-only: below 1 means the image path
                             (patch codec, timestep MLP, noising, bidirectional mask) costs
                             more per element than the LM head it replaces
    pack_s, mask_s           seconds to pack one batch with data.sequences.Packer (CPU, done
                             by the data loader) and to build the attention mask (part of
                             each step); *_fraction divides them by the step time

The peak is measured once per process (bench.peak) in the run's dtype. With --compile the
batch is fixed, so shapes are static and one compilation serves every timed step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch

from bench.common import (DTYPES, add_common_args, build_family, make_batch, median, resolve_device, time_calls,
                          to_json_floats)
from grid.machine import measure_matmul_peak
from grid.train import optimizer_for
from model.accounting import flops_per_element
from model.batch import PackedBatch
from model.family import Family, combine

DEFAULT_SIZES = "cpu-0.11M,cpu-0.33M,cpu-0.8M"


def _step_fn(model, fwd, family: Family, opt, batch: PackedBatch, device: torch.device,
             dtype: torch.dtype):
    """A closure running one training step on `batch` (already on device)."""
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step() -> None:
        with autocast:
            loss, _ = combine(family.loss_terms(fwd, batch, family.draw(batch, None)), family.weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _throughput(step, batch: PackedBatch, args, device, flops: dict, peak: float) -> dict:
    times = time_calls(step, args.steps, args.warmup, device)
    step_s = median(times)
    rate = batch.num_elements / step_s
    return {"elements_per_step": batch.num_elements, "images_per_step": int(batch.images.shape[0]),
            "step_s": step_s, "step_s_min": min(times), "elements_per_s": rate,
            "mfu_six_n": flops["six_n"] * rate / peak, "mfu_with_attention": flops["with_attention"] * rate / peak}


def _overheads(model, family: Family, args, device) -> dict:
    """Seconds to pack one batch (CPU) and to build its attention mask on the device."""
    start = time.perf_counter()
    batch = make_batch(family, args.seq_len, args.batch, args.seed + 1).to(device)
    pack_s = time.perf_counter() - start

    def mask() -> None:
        model.attention_mask(batch.doc_id, batch.image_id)

    return {"pack_s": pack_s, "mask_s": median(time_calls(mask, 5, 1, device))}


def bench_size(name: str, size: str, args, device: torch.device, dtype: torch.dtype, peak: float) -> dict:
    torch.manual_seed(args.seed)
    family = build_family(name, size, args)
    model = family.build().to(device).train()
    opt = optimizer_for(model, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    fwd = torch.compile(model) if args.compile else model
    flops = flops_per_element(family.cfg, args.seq_len)
    out = {"family": name, "size": size, "N": family.param_counts(),
           "params_actual": sum(p.numel() for p in model.parameters()), "flops_per_element": flops}
    mixed = make_batch(family, args.seq_len, args.batch, args.seed).to(device)
    text = make_batch(family, args.seq_len, args.batch, args.seed, images=False).to(device)
    out.update(_throughput(_step_fn(model, fwd, family, opt, mixed, device, dtype), mixed, args, device, flops,
                           peak))
    base = _throughput(_step_fn(model, fwd, family, opt, text, device, dtype), text, args, device, flops, peak)
    out["text_only"] = base
    out["speed_vs_text_only"] = out["elements_per_s"] / base["elements_per_s"]
    ov = _overheads(model, family, args, device)
    out.update(ov, pack_fraction=ov["pack_s"] / out["step_s"], mask_fraction=ov["mask_s"] / out["step_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="transfusion,chameleon", help="comma-separated family names")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated names from model/sizes.py")
    ap.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: torch's default)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per batch kind")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--peak-seconds", type=float, default=1.5)
    add_common_args(ap)
    args = ap.parse_args(argv)
    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    caller_threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        _run(args, device, dtype)
    finally:  # a caller in the same process (a test) keeps its own thread count
        torch.set_num_threads(caller_threads)
    return 0


def _run(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    peak = measure_matmul_peak(device, dtype, seconds=args.peak_seconds)
    run = {"device": str(device), "dtype": args.dtype, "compile": args.compile, "patch": args.patch,
           "seq_len": args.seq_len, "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
           "peak_flops": peak}
    for size in args.sizes.split(","):
        for name in args.families.split(","):
            res = bench_size(name.strip(), size.strip(), args, device, dtype, peak)
            print(json.dumps(to_json_floats({**res, **run})), flush=True)


if __name__ == "__main__":
    sys.exit(main())
