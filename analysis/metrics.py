"""Which way each benchmark metric improves, and the order tables and figures show them in.

Metric keys are whatever the runs wrote into evals.json ("text_c4/lm", "t2i/fid", ...); the
suite never hard-codes the list. The direction is read from the key's last part: losses,
perplexity, bits per byte and FID fall as models improve; CIDEr, BLEU, ROUGE, accuracy, CLIP
score and GenEval rise (paper Table 3), as do the captions' checked content (objects, colours,
positions, correct, parsed) and the conditioning gains (cond/..._gain: how much the other
modality helps). A key matching neither is treated as lower-is-better
and flagged as a guess, so a report can say so.
"""

from __future__ import annotations

import re

# (pattern on the key's last "/" part, higher is better); first match wins.
_DIRECTIONS: tuple[tuple[str, bool], ...] = (
    (r"loss|^lm|lm_|diffusion|ppl|perplexity|bpb|bits|nll|fid|kid|mse|error|^z$", False),
    (r"cider|bleu|rouge|meteor|acc|clip|geneval|score|recall|precision|f1|distinct|objects|colours|positions|"
     r"correct|parsed|gain", True),
)
# Display order: text first, then captioning, then image generation (paper Table 3).
_ORDER: tuple[str, ...] = ("text_c4", "text_wiki", "text", "llama", "caption", "images", "t2i", "geneval")


def direction(metric: str) -> tuple[bool, bool]:
    """(higher_is_better, known) for a metric key; unknown keys are (False, False)."""
    leaf = metric.rsplit("/", 1)[-1].lower()
    for pattern, higher in _DIRECTIONS:
        if re.search(pattern, leaf):
            return higher, True
    return False, False


def higher_is_better(metric: str) -> bool:
    """True when larger values of `metric` are better (see `direction`)."""
    return direction(metric)[0]


def order_metrics(metrics: list[str]) -> list[str]:
    """Metrics sorted text -> captioning -> image generation, then alphabetically."""

    def key(m: str) -> tuple[int, str]:
        head = m.split("/", 1)[0].lower()
        rank = next((i for i, p in enumerate(_ORDER) if head.startswith(p)), len(_ORDER))
        return rank, m

    return sorted(metrics, key=key)


def arrow(metric: str) -> str:
    """A direction mark for table headers: down for lower-is-better, up otherwise, '?' if guessed."""
    higher, known = direction(metric)
    return ("↑" if higher else "↓") + ("" if known else "?")
