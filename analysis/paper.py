"""The Transfusion paper's own numbers that the report and the findings compare against.

Read from ../shared/paper-notes.md (arXiv 2408.11039 v1). These are the paper's values, not
ours: the findings table prints each beside what our runs measured, and the figures mark them.
Toy-scale runs can only mirror their shape (which side of 1 a ratio falls, which setting wins),
never their size: the paper's models are 0.16-7B parameters on 0.5T elements.
"""

from __future__ import annotations

# The benchmarks of the paper's Figure 5 and Table 3, as our keys, with their display names.
# GenEval is the paper's final-model alignment benchmark; ours is its analogue on the shapes
# world (an exact checker, data/checker.py).
FIGURE5: dict[str, str] = {
    "text_c4/ppl": "C4 perplexity",
    "text_wiki/ppl": "Wikipedia perplexity",
    "caption/cider": "captioning CIDEr",
    "t2i/fid": "image generation FID",
    "t2i/geneval_overall": "GenEval analogue (shapes checker)",
}

# Table 3: parity FLOP ratio Transfusion / Chameleon at Chameleon's largest run (7B, 0.5T).
PARITY: dict[str, float] = {"text_c4/ppl": 0.489, "text_wiki/ppl": 0.526, "caption/cider": 0.218, "t2i/fid": 0.029}

# Ablations at 0.76B (Tables 4-8), as (setting A, setting B) -> (value A, value B).
ATTENTION_FID = {"linear": (61.3, 20.3), "unet": (16.8, 16.7)}  # causal, bidirectional
PATCH_FID = {"linear": {1: 21.0, 2: 20.3, 4: 25.6, 8: 43.5}, "unet": {2: 16.7, 4: 16.0, 8: 16.1}}
PATCH_C4_LINEAR = (10.3, 11.7)  # C4 perplexity, 1x1 (smallest patches) -> 8x8
ENCODER_FID_BY_SIZE = {"0.16B": (37.6, 18.8), "7B": (18.6, 16.0)}  # linear, U-Net
NOISE_LIMIT_CIDER = {"0.76B": (25.4, 29.4), "7B": (33.7, 35.2)}  # off, t <= 500
TEXT_ONLY_C4 = {"transfusion": (10.1, 10.4), "chameleon": (11.0, 11.8)}  # text only, with images
