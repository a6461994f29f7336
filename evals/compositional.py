"""Text -> image alignment in the shapes world: exact compositional accuracy per GenEval
category (Ghosh et al. 2023; paper sec 4.4 reports GenEval for the final 7B model).

The prompts are the held-out images' own captions: every shapes record carries one caption per
GenEval category its scene allows, with machine-checkable clauses (data/shapes.py). For each
category the first `n` held-out images that have such a caption give the prompts, so each
prompt comes with a ground-truth image that satisfies it: the checker's pass rate on those
images is the ceiling (a test holds it >= 99%). A generated image passes when the shapes
checker (data/checker.py, exact, no trained detector) finds every clause true in its pixels;
overall is the mean over categories, as GenEval averages its tasks.

Intervals are Wilson's per category; overall's is Wilson's on the pooled prompts (exact pooling
when every category has the same number of prompts, as by default: 32 each from the 1,000 test
images). References at the same prompts: `_ref_true` is the checker on the prompts' own
ground-truth images (the ceiling), `_ref_shuffled` on the ground-truth images of other prompts
of the same category (chance: how often a real scene satisfies a prompt it was not made for).
"""

from __future__ import annotations

from typing import Sequence

import torch

from data.checker import score
from data.shapes import GENEVAL_CATEGORIES, Caption
from evals.intervals import wilson, with_interval


def geneval_prompts(meta: list[dict], n_per_category: int,
                    categories: Sequence[str] = GENEVAL_CATEGORIES) -> list[tuple[Caption, int]]:
    """(caption, index of its ground-truth image) pairs from a shapes split's records
    (image_set(...)["meta"]), up to n per category, categories in turn."""
    out: list[tuple[Caption, int]] = []
    for category in categories:
        found = 0
        for i, m in enumerate(meta):
            if found == n_per_category:
                break
            for d in m["captions"]:
                if d["category"] == category:
                    out.append((Caption.from_dict(d), i))
                    found += 1
                    break
    if not out:
        raise ValueError("no GenEval prompts in these records (not a shapes image set?)")
    return out


def geneval_scores(images: torch.Tensor | Sequence, captions: Sequence[Caption]) -> dict[str, float]:
    """Pass rate per category and 'overall' (mean over categories) of uint8 images
    [N, 3, H, W] against their prompts."""
    return score(list(images), list(captions))


def _with_intervals(rates: dict[str, float], captions: Sequence[Caption]) -> dict[str, float]:
    """Rates per category and overall (geneval_scores) with Wilson intervals (module docstring)."""
    counts = {c: sum(cap.category == c for cap in captions) for c in rates if c != "overall"}
    out: dict[str, float] = {}
    for c, n in counts.items():
        out |= with_interval(c, rates[c], *wilson(round(rates[c] * n), n))
    total = sum(counts.values())
    return out | with_interval("overall", rates["overall"], *wilson(rates["overall"] * total, total))


def geneval_with_intervals(images: torch.Tensor | Sequence, captions: Sequence[Caption]) -> dict[str, float]:
    """geneval_scores with <category>_lo/_hi and overall_lo/_hi."""
    return _with_intervals(geneval_scores(images, captions), captions)


def geneval_references(images: torch.Tensor, prompts: list[tuple[Caption, int]],
                       generator: torch.Generator) -> dict[str, float]:
    """{<category>_ref_true, <category>_ref_shuffled, overall_ref_...} of the held-out images
    uint8 [N, 3, H, W] that `prompts` (geneval_prompts) index: own images, and images of other
    prompts of the same category (a cyclic shift by a random offset within each category)."""
    caps = [c for c, _ in prompts]
    own = torch.tensor([i for _, i in prompts])
    other = own.clone()
    for category in dict.fromkeys(c.category for c in caps):
        at = torch.tensor([k for k, c in enumerate(caps) if c.category == category])
        if at.numel() > 1:
            shift = int(torch.randint(1, at.numel(), (), generator=generator))
            other[at] = own[at.roll(shift)]
    out = {}
    for name, idx in (("true", own), ("shuffled", other)):
        out |= {f"{k}_ref_{name}": v for k, v in geneval_scores(images[idx], caps).items()}
    return out
