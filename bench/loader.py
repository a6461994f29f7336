"""Training-stream throughput over shard sets, at the paper's shapes, in one process.

    python -m bench.loader [--batches 20] [--seq-len 4096] [--batch-rows 8] [--docs 4000]
        [--images 4000] [--shards 4] [--doc-tokens 600] [--caption-tokens 24]

Writes two synthetic shard sets (data/arrays.py) to a temporary directory: text documents of
random length (mean --doc-tokens, ids below a 32k vocabulary) and images with 1 to 5 captions
of about --caption-tokens ids each, as latents (8 x 32 x 32 float16: a 256 px image through an
8x-down, 8-channel autoencoder) for Transfusion and as 32 x 32 int16 codes for Chameleon. Then
times data/stream.py's MixedStream, as the trainer builds it (text 1:1 with images by
elements, 80% caption first), for each family:
  shards    read from the memory-mapped files (the page cache warm after the first pass,
            as on a node whose data sits in RAM or on a fast local disk);
  in_memory the same sets copied into RAM first: the baseline, so the difference is what
            reading through the maps costs.
Prints one JSON object: elements per second (non-padding elements, as D counts them) and
milliseconds per batch for each, with the machine's CPU. One process, one thread: a rank's
worker processes would multiply it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.arrays import ShardSet, caption_arrays, write_index, write_shard
from data.stream import MixedStream, ShardDocuments, ShardPairs, StreamConfig
from model.batch import SpecialTokens

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)
VOCAB = 32_000
LATENT = (8, 32, 32)  # 256 px, 8x down, 8 channels
PATCH = 2  # Transfusion's patch: (32 / 2)^2 = 256 elements per image
CODES = (32, 32)  # Chameleon: 1,024 codes per image


def write_sets(root: Path, args: argparse.Namespace) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    docs_per, images_per = -(-args.docs // args.shards), -(-args.images // args.shards)
    out = {"text": root / "text", "latents": root / "latents", "codes": root / "codes"}
    stems = [f"{k:05d}" for k in range(args.shards)]
    for stem in stems:
        lengths = rng.geometric(1.0 / args.doc_tokens, docs_per)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        write_shard(out["text"], stem, "text",
                    {"tokens": rng.integers(5, VOCAB, int(offsets[-1]), dtype=np.int32), "offsets": offsets})
        captions = [[rng.integers(5, VOCAB, max(1, int(rng.normal(args.caption_tokens, 6)))).tolist()
                     for _ in range(int(rng.integers(1, 6)))] for _ in range(images_per)]
        caps = caption_arrays(captions)
        write_shard(out["latents"], stem, "latents",
                    {"latents": rng.standard_normal((images_per, *LATENT)).astype(np.float16), **caps})
        write_shard(out["codes"], stem, "codes",
                    {"codes": rng.integers(0, 16384, (images_per, *CODES)).astype(np.int16), **caps})
    for path in out.values():
        write_index(path, stems, {"written_by": "bench.loader"})
    return out


def in_memory(shards: ShardSet) -> ShardSet:
    """The same set with every shard's arrays copied into RAM (the baseline)."""
    for i in range(len(shards)):
        shard = shards.shard(i)
        for name, value in vars(shard).items():
            setattr(shard, name, np.array(value))
    return shards


def measure(text: ShardSet, images: ShardSet, elements_per_image: int, args: argparse.Namespace) -> dict:
    cfg = StreamConfig(seq_len=args.seq_len, batch_rows=args.batch_rows, seed=0)
    stream = MixedStream(cfg, SPECIAL, elements_per_image, ShardDocuments(text), ShardPairs(images))
    for _ in range(2):  # warm-up: maps touched, permutations drawn
        stream.next_batch()
    elements, start = 0, time.perf_counter()
    for _ in range(args.batches):
        elements += stream.next_batch().num_elements
    seconds = time.perf_counter() - start
    return {"elements_per_s": round(elements / seconds), "ms_per_batch": round(1000 * seconds / args.batches, 2),
            "elements_per_batch": elements // args.batches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch-rows", type=int, default=8)
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, default=600)
    ap.add_argument("--caption-tokens", type=int, default=24)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        sets = write_sets(Path(tmp), args)
        per_image = {"latents": (LATENT[1] // PATCH) * (LATENT[2] // PATCH), "codes": CODES[0] * CODES[1]}
        for family, kind in (("transfusion", "latents"), ("chameleon", "codes")):
            shards = measure(ShardSet(sets["text"]), ShardSet(sets[kind]), per_image[kind], args)
            memory = measure(in_memory(ShardSet(sets["text"])), in_memory(ShardSet(sets[kind])), per_image[kind], args)
            result[family] = {"shards": shards, "in_memory": memory,
                              "shards_over_in_memory": round(shards["elements_per_s"] / memory["elements_per_s"], 3)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
