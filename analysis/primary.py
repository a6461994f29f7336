"""The primary analysis of each kind of finding, fixed before the runs were looked at.

analysis/findings.py judges every finding by the analysis named here and labels anything else
it prints (another estimator, guidance scale or FLOP count) as secondary or exploratory, so
that no verdict is chosen after seeing which analysis gives the answer. The reasons are part of
the table; change it only with a reason that does not depend on the results.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primary:
    estimator: str
    guidance: float  # classifier-free guidance scale of the FIDs and GenEval scores it reads
    n_def: str  # which N the compute 6ND counts: a column suffix of analysis/collect.py
    reason: str


PRIMARY: dict[str, Primary] = {
    "parity": Primary(
        "paired", 5.0, "nonembedding",
        "toy-paper ran every (size, D, seed) setting in both families, so the matched-setting "
        "estimator (analysis/paired.py) holds everything but the family fixed; guidance 5 is the "
        "paper's protocol for the family comparison (sec 4.2); non-embedding N is Kaplan et al.'s "
        "(2020) convention and the one every fit of the suite uses (the paper does not say which N it counts)"),
    "parity-trendline": Primary(
        "trendline", 5.0, "nonembedding",
        "secondary: the paper's own method (Chameleon's largest run against Transfusion's "
        "trendline), shown beside the primary so the two can be compared"),
    "ablation": Primary(
        "matched runs", 3.0, "nonembedding",
        "an ablation ratio compares two runs that differ only in the knob; guidance 3 is the "
        "paper's protocol for its ablations (Tables 5-7); FIDs at another scale are exploratory"),
    "text-only": Primary(
        "matched runs, equal text tokens", 5.0, "nonembedding",
        "the cost of images to text compares a mixed run with a text-only run that saw as many "
        "text tokens (the mixed run's text share); at equal D the text-only run sees twice the "
        "text, which toy-paper's data exponent alone prices at x1.25 in C4 perplexity"),
}

# Secondary views the findings print beside a primary, each labelled.
FLOP_DEFINITIONS = {
    "nonembedding": "non-embedding N (primary)",
    "with_head": "N with the output head",
    "with_patch": "N with all embeddings and patch layers",
}
EXPLORATORY = "exploratory"
