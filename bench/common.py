"""What the benchmarks share: device/dtype flags, wall-clock timing, model and batch building.

Batches are random (token ids, Gaussian latents): speed depends on shapes, not on content.
A mixed batch holds text documents and caption/image pairs in a 1:1 ratio by elements, packed
by the suite's own data.sequences.Packer, so padding and per-row image layout are what
training sees.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from data.sequences import Packer
from model.batch import Image, PackedBatch, SpecialTokens, Text
from model.family import Family
from model.patches import PatchConfig
from model.sizes import get_size
from model.transfusion import TransfusionConfig

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)
FIRST_ID = 5  # ids below are special tokens
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CAPTION_FIRST = 0.8  # share of caption-then-image pairs; the rest are image-then-caption


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """Flags every model benchmark takes: device, dtype and the model's non-size shape."""
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--latent-channels", type=int, default=8)
    ap.add_argument("--latent-size", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--patch", choices=("linear", "unet"), default="linear")
    ap.add_argument("--codebook", type=int, default=512, help="VQ codebook (Chameleon)")
    ap.add_argument("--seed", type=int, default=0)


def resolve_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock time covers the work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], n: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of n calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def build_config(size: str, args: argparse.Namespace) -> TransfusionConfig:
    """A Transfusion config of a named backbone size (model/sizes.py) and the flags' shape."""
    patch = PatchConfig(kind=args.patch, patch_size=args.patch_size, latent_channels=args.latent_channels,
                        latent_size=args.latent_size)
    return TransfusionConfig(backbone=get_size(size), patch=patch, vocab_size=args.vocab)


def build_family(name: str, size: str, args: argparse.Namespace) -> Family:
    """A family (grid/family.py) bound to a model of a named size with the family's own recipe
    (Chameleon: QK-norm, z-loss) and the flags' image shape: a latent (C, S, S) cut into P x P
    patches for Transfusion, a code grid of S / P per side for Chameleon, so both spend the
    same elements on an image."""
    from grid.config import ModelKnobs, RunConfig, build_model_config
    from grid.family import get_family

    spec = get_family(name)
    run = RunConfig(family=name, size=size, model=ModelKnobs(patch_kind=args.patch, patch_size=args.patch_size))
    side = args.latent_size // args.patch_size
    shape = (args.latent_channels, args.latent_size, args.latent_size) if spec.image_kind == "kl" else (side, side)
    return spec(build_model_config(run, args.vocab, shape, lambda: args.codebook))


def random_image(family: Family, g: torch.Generator) -> Image:
    """An image in the family's representation: a Gaussian latent, or uniform VQ codes."""
    cfg = family.cfg
    if family.image_kind == "vq":
        return Image(torch.randint(0, cfg.codebook_size, (cfg.code_grid, cfg.code_grid), generator=g))
    p = cfg.patch
    return Image(torch.randn(p.latent_channels, p.latent_size, p.latent_size, generator=g))


def random_text(g: torch.Generator, vocab: int, lo: int, hi: int) -> Text:
    """Text of a length uniform in [lo, hi] with ordinary (non-special) ids."""
    n = int(torch.randint(lo, hi + 1, (1,), generator=g))
    return Text(torch.randint(FIRST_ID, vocab, (n,), generator=g))


def make_batch(family: Family, seq_len: int, rows: int, seed: int, images: bool = True) -> PackedBatch:
    """`rows` packed rows of seq_len elements (CPU tensors).

    images=True: text documents (16 .. 2*seq_len tokens; long ones split across rows) and
    caption/image pairs (captions of 8 .. 48 tokens), each added while its share of elements
    is behind, so the two are 1:1 by elements. images=False: the text documents alone, the
    text-only LM baseline.
    """
    g = torch.Generator().manual_seed(seed)
    n, vocab = family.elements_per_image, getattr(family.cfg, "text_vocab_size", family.cfg.vocab_size)
    packer = Packer(seq_len, SPECIAL, n)
    text_elems = image_elems = 0
    while packer.ready() < rows:
        if images and image_elems <= text_elems:
            caption = random_text(g, vocab, 8, 48)
            image = random_image(family, g)
            first = float(torch.rand((), generator=g)) < CAPTION_FIRST
            packer.add([caption, image] if first else [image, caption])
            image_elems += caption.ids.numel() + n + 4  # BOS, BOI, EOI, EOS
        else:
            doc = random_text(g, vocab, 16, 2 * seq_len)
            packer.add([doc])
            text_elems += doc.ids.numel() + 2
    return packer.pop(rows)


def to_json_floats(d: dict, digits: int = 4) -> dict:
    """Round floats (recursively) to `digits` significant digits for readable JSON."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = to_json_floats(v, digits)
        elif isinstance(v, float):
            out[k] = float(f"{v:.{digits}g}")
        else:
            out[k] = v
    return out
