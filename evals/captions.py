"""Image -> text: CIDEr, BLEU-4 and ROUGE-L of generated captions against every reference
caption of each image (paper Table 3: CIDEr on MS-COCO Karpathy test; here the held-out split
of the image set, whose shapes images carry several references each).

Scoring is the COCO caption toolkit's (pycocoevalcap): the Stanford PTB tokenizer (Java)
lower-cases and strips punctuation from candidates and references alike, then CIDEr-D (its
n-gram document frequencies come from the references of the evaluated set, so the value
depends on that set: compare runs on the same images), BLEU-4 ("closest" reference length)
and ROUGE-L. Values are reported on the toolkit's scale (CIDEr ~0..10, papers print x100).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

# PTBTokenizer reads one caption per line: an empty caption would be an empty line, which the
# tokenizer may drop and so shift every later caption. An empty candidate becomes this
# placeholder (punctuation, removed again after tokenization: it scores as the empty caption).
_EMPTY = "."


def _clean(text: str) -> str:
    text = " ".join(text.split())  # newlines would split one caption into two lines
    return text if text else _EMPTY


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the tokenizer's Java process writes progress lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def caption_scores(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"cider", "bleu4", "rougeL"} of one candidate per image against its references
    (at least one per image)."""
    return caption_scores_many({"": candidates}, references)[""]


def caption_scores_many(candidate_sets: dict[str, list[str]], references: list[list[str]]) -> dict[str, dict]:
    """caption_scores of several candidate sets (e.g. the model's captions and chance references)
    against the same references, with one tokenizer run (each run starts a Java process):
    {set name: {"cider", "bleu4", "rougeL"}}."""
    if not references:
        raise ValueError("no captions to score")
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    for name, candidates in candidate_sets.items():
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates{f' ({name})' if name else ''} for "
                             f"{len(references)} reference lists")
    n = len(references)
    res = {f"{j}:{i}": [{"caption": _clean(c)}] for j, cands in enumerate(candidate_sets.values())
           for i, c in enumerate(cands)}
    res |= {f"ref:{i}": [{"caption": _clean(r)} for r in refs] for i, refs in enumerate(references)}
    with _quiet_stderr():
        res = PTBTokenizer().tokenize(res)
    gts = {i: res.pop(f"ref:{i}") for i in range(n)}
    out = {}
    for j, name in enumerate(candidate_sets):
        mine = {i: res[f"{j}:{i}"] for i in range(n)}
        with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its counts
            bleu, _ = Bleu(4).compute_score(gts, mine, verbose=0)
            cider, _ = Cider().compute_score(gts, mine)
            rouge, _ = Rouge().compute_score(gts, mine)
        out[name] = {"cider": float(cider), "bleu4": float(bleu[3]), "rougeL": float(rouge)}
    return out
