"""Text -> text: perplexity and bits per byte on held-out documents (paper Table 3's C4 and
Wikipedia columns; ../shared/paper-notes.md "Evaluation protocol").

Both families are scored the same way: the text-only forward pass (token embedding, backbone
under the causal document mask, head) and the model's full next-token distribution. For the
Chameleon baseline that distribution spans the joint vocabulary, so probability it puts on
image codes in the middle of text counts against it, as it does in the paper.

Each document is scored on its own: BOS, then its tokens, each token predicted from the
tokens before it. Documents longer than the context are cut into consecutive windows of
`context` predictions; each window is its own row starting at position 0 (non-overlapping
windows, so a token at a window start sees less context; the same for every run). EOS is not
a target: perplexity is over the document's own tokens, and bits per byte divides the same
nats by the UTF-8 bytes those tokens stand for, which makes it comparable across tokenizers
(nanochat's evaluation; data/tokenizer.py token_bytes).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn



def next_token_logprobs(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                        valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-only pass of a Transfusion or Chameleon model over rows of token ids.

    inputs, targets [B, L] long (targets[i] follows inputs[i]); valid [B, L] bool marks the
    real elements, a prefix of each row (padding after). Returns (log p(target) [B, L] float32,
    greedy [B, L] bool: the target is the argmax); both are meaningless where not valid.
    """
    b, length = inputs.shape
    doc = torch.where(valid, 0, -1)  # padding is an invalid slot: nothing real sees it
    pos = torch.arange(length, device=inputs.device).expand(b, length)
    h = model.decode(model.tok_emb(inputs.clamp(min=0)), pos, doc, torch.full_like(doc, -1))  # model/token_model.py
    logits = model.head(h).float()
    logp = F.log_softmax(logits, dim=-1)
    tgt = targets.clamp(min=0)
    return logp.gather(-1, tgt[..., None])[..., 0], logits.argmax(-1) == tgt


def windows(doc: torch.Tensor, bos: int, context: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A document's tokens [n] -> (inputs [m], targets [m]) pieces with m <= context that
    predict every token once: inputs BOS t1 .. t(n-1), targets t1 .. tn, cut every `context`."""
    seq = torch.cat([torch.tensor([bos], dtype=torch.long), doc.long()])
    inputs, targets = seq[:-1], seq[1:]
    return [(inputs[s:s + context], targets[s:s + context]) for s in range(0, doc.numel(), context)]


@torch.no_grad()
def score_pieces(model: nn.Module, pieces: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int,
                 device: torch.device, progress=None) -> list[torch.Tensor]:
    """Log-probabilities [m] of each piece's targets, run `batch_size` rows at a time
    (right-padded; pieces of similar length share a batch, so little is padding).
    `progress` is called with the number of pieces done per batch."""
    out: list[torch.Tensor] = [torch.zeros(0)] * len(pieces)
    order = sorted(range(len(pieces)), key=lambda i: pieces[i][0].numel())
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = max(pieces[i][0].numel() for i in idx)
        inputs = torch.zeros(len(idx), length, dtype=torch.long)
        targets = torch.zeros_like(inputs)
        valid = torch.zeros(len(idx), length, dtype=torch.bool)
        for r, i in enumerate(idx):
            x, y = pieces[i]
            inputs[r, :x.numel()], targets[r, :y.numel()], valid[r, :x.numel()] = x, y, True
        logp, _ = next_token_logprobs(model, inputs.to(device), targets.to(device), valid.to(device))
        for r, i in enumerate(idx):
            out[i] = logp[r, :pieces[i][0].numel()].cpu()
        if progress is not None:
            progress(len(idx))
    return out


def heldout_documents(documents: Iterable, max_tokens: int) -> list[torch.Tensor]:
    """The first of the held-out documents (token id arrays, in file order: a text shard set's
    `documents()`), the last one cut so that max_tokens are scored in all (fixed: no sampling)."""
    docs, left = [], max_tokens
    for doc in documents:
        if left <= 0:
            break
        doc = torch.as_tensor(np.asarray(doc[:left], dtype=np.int64))
        if doc.numel():
            docs.append(doc)
            left -= doc.numel()
    return docs


def perplexity(model: nn.Module, docs: list[torch.Tensor], bos: int, token_bytes: torch.Tensor,
               context: int = 256, batch_size: int = 32, progress=None) -> dict[str, float]:
    """{"ppl", "bpb", "nll", "tokens", "bytes"} over documents (token ids [n] each, no
    specials); nll is nats per token, bpb = sum(nats) / (ln 2 * sum(bytes of the targets))."""
    device = next(model.parameters()).device
    pieces = [p for d in docs for p in windows(d, bos, context)]
    logps = score_pieces(model, pieces, batch_size, device, progress)
    nats = -sum(float(lp.double().sum()) for lp in logps)
    n_tokens = sum(d.numel() for d in docs)
    n_bytes = int(sum(int(token_bytes[d].sum()) for d in docs))
    if n_tokens == 0:
        raise ValueError("no held-out tokens to score")
    return {"ppl": math.exp(nats / n_tokens), "bpb": nats / (math.log(2) * max(n_bytes, 1)),
            "nll": nats / n_tokens, "tokens": float(n_tokens), "bytes": float(n_bytes)}


def unigram_perplexity(docs: list[torch.Tensor]) -> float:
    """Perplexity of the best unigram model of these very documents (their own token
    frequencies): a floor any model that uses context should get under."""
    ids = torch.cat(docs).long()
    p = torch.bincount(ids).double()
    p = p[p > 0] / ids.numel()
    return math.exp(float(-(p * p.log()).sum()))
