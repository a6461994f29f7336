"""Text -> image alignment in the shapes world: exact compositional accuracy per GenEval
category (Ghosh et al. 2023; paper sec 4.4 reports GenEval for the final 7B model).

The prompts are the held-out images' own captions: every shapes record carries one caption per
GenEval category its scene allows, with machine-checkable clauses (data/shapes.py). For each
category the first `n` held-out images that have such a caption give the prompts, so each
prompt comes with a ground-truth image that satisfies it: the checker's pass rate on those
images is the ceiling (a test holds it >= 99%). A generated image passes when the shapes
checker (data/checker.py, exact, no trained detector) finds every clause true in its pixels;
overall is the mean over categories, as GenEval averages its tasks.
"""

from __future__ import annotations

from typing import Sequence

import torch

from data.checker import score
from data.shapes import GENEVAL_CATEGORIES, Caption


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
