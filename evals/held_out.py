"""Held-out losses: the training objective's terms on fixed held-out draws (DESIGN: a run
records them at the end, and every eval_every steps in metrics.jsonl).

    held_out_losses(family, data, "shapes", stream_cfg, loss_means, device)
    # {"text_c4/lm": ..., "text_wiki/lm": ..., "images_val/diffusion": ..., "images_val/lm": ...}

Sources: each held-out text corpus on its own (text share 1), and the validation image-caption
pairs on their own (text share 0), reported as the family's `held_out_terms`. Every source
has its own stream and generator seeded 1, so evaluating never moves the training RNG and two
evaluations of one model agree. `loss_means(batch, generator)` is the trainer's own loss on a
batch ({term: global mean}), so under DDP the ranks share each batch as in training.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from data.embedded import EmbeddedData
from data.stream import MixedStream, StreamConfig
from model.batch import PackedBatch
from model.family import Family

HELD_OUT_SEED = 1


@torch.no_grad()
def held_out_losses(family: Family, data: EmbeddedData, dataset: str, stream: StreamConfig,
                    loss_means: Callable[[PackedBatch, torch.Generator], dict[str, float]],
                    device: torch.device, batches: int = 4) -> dict[str, float]:
    """{<source>/<term>: mean over `batches` batches}; the caller puts the model in eval mode."""
    tok = data.tokenizer
    sources = {f"text_{role}": (data.text_documents(f"heldout_{role}", seed=HELD_OUT_SEED), None, 1.0, ("lm",))
               for role in ("c4", "wiki") if data.has_text(f"heldout_{role}")}
    sources["images_val"] = (None, data.pairs(dataset, "val", family.image_kind, seed=HELD_OUT_SEED), 0.0,
                             family.held_out_terms)
    out = {}
    for name, (text, pairs, share, keys) in sources.items():
        cfg = replace(stream, text_share=share, seed=HELD_OUT_SEED)
        batches_of = MixedStream(cfg, tok.special, family.elements_per_image, text, pairs, tok.encode)
        gen = torch.Generator(device).manual_seed(HELD_OUT_SEED)
        sums: dict[str, float] = {}
        for _ in range(batches):
            for k, v in loss_means(batches_of.next_batch().to(device), gen).items():
                sums[k] = sums.get(k, 0.0) + v
        out.update({f"{name}/{k}": sums[k] / batches for k in keys})
    return out
