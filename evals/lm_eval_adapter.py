"""Text -> text accuracy by ranked classification through EleutherAI's lm-evaluation-harness
(lm_eval, the optional `lmeval` extra): paper Table 3's "Llama acc", the 0-shot mean over
HellaSwag, PIQA, SIQA, WinoGrande, ARC-e, ARC-c and BoolQ.

`SuiteLM` is an `lm_eval.api.model.LM` over either family: loglikelihood scores a continuation
after its context with the text-only pass of evals/text.py (ranked classification: the harness
picks the choice with the highest log-likelihood), loglikelihood_rolling scores whole documents
in windows, generate_until decodes greedily. Context and continuation are tokenized apart and
joined, BOS first; sequences longer than the context window lose tokens from the left.

    run_lm_eval(model, tokenizer, ["hellaswag", "piqa"])                    # cluster, HF datasets
    run_lm_eval(model, tokenizer, ["my_task"], include_path="tasks/")       # local task YAMLs
"""

from __future__ import annotations

from typing import Sequence

import torch
from lm_eval.api.model import LM
from torch import nn

from data.tokenizer import Tokenizer
from evals.sampling import continue_text
from model.family import Family
from evals.text import next_token_logprobs, score_pieces, windows

# The paper's Llama-2 suite (lm_eval task names); ARC is two tasks.
LLAMA_TASKS = ("hellaswag", "piqa", "siqa", "winogrande", "arc_easy", "arc_challenge", "boolq")


class SuiteLM(LM):
    """lm_eval's model interface over a Transfusion or Chameleon model (eval mode, no grad)."""

    def __init__(self, model: nn.Module, family: Family, tokenizer: Tokenizer, context: int = 256,
                 batch_size: int = 16, max_gen_tokens: int = 64) -> None:
        super().__init__()
        self.model, self.family, self.tok, self.context = model, family, tokenizer, context
        self.batch_size, self.max_gen_tokens = batch_size, max_gen_tokens
        self._device = next(model.parameters()).device  # LM.device reads it

    def _encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tok.encode(text), dtype=torch.long)

    @torch.no_grad()
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Per request (context, continuation): (sum of log p over the continuation's tokens,
        whether greedy decoding would have produced exactly them)."""
        bos = self.tok.special.bos
        pieces, n_cont = [], []
        for req in requests:
            ctx, cont = req.args
            cont_ids = self._encode(cont)
            seq = torch.cat([torch.tensor([bos]), self._encode(ctx), cont_ids])[-(self.context + 1):]
            pieces.append((seq[:-1], seq[1:]))
            n_cont.append(min(cont_ids.numel(), seq.numel() - 1))
        order = sorted(range(len(pieces)), key=lambda i: -pieces[i][0].numel())  # similar lengths per batch
        results: list[tuple[float, bool]] = [(0.0, False)] * len(pieces)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            batch = [pieces[i] for i in idx]
            logps, greedy = self._score(batch)
            for i, lp, gr in zip(idx, logps, greedy):
                k = n_cont[i]
                results[i] = (float(lp[lp.numel() - k:].double().sum()), bool(gr[gr.numel() - k:].all()))
        return results

    def _score(self, batch: list[tuple[torch.Tensor, torch.Tensor]]):
        """(log p [m], greedy [m]) per (inputs [m], targets [m]) row of one batch."""
        length = max(x.numel() for x, _ in batch)
        inputs = torch.zeros(len(batch), length, dtype=torch.long)
        targets, valid = torch.zeros_like(inputs), torch.zeros(len(batch), length, dtype=torch.bool)
        for r, (x, y) in enumerate(batch):
            inputs[r, :x.numel()], targets[r, :y.numel()], valid[r, :x.numel()] = x, y, True
        logp, greedy = next_token_logprobs(self.model, inputs.to(self._device), targets.to(self._device),
                                           valid.to(self._device))
        return ([logp[r, :x.numel()].cpu() for r, (x, _) in enumerate(batch)],
                [greedy[r, :x.numel()].cpu() for r, (x, _) in enumerate(batch)])

    @torch.no_grad()
    def loglikelihood_rolling(self, requests) -> list[float]:
        """Per request (text,): the log-likelihood of the whole text after BOS, in windows."""
        out = []
        for req in requests:
            pieces = windows(self._encode(req.args[0]), self.tok.special.bos, self.context)
            out.append(float(sum(lp.double().sum() for lp in score_pieces(self.model, pieces, self.batch_size,
                                                                          self._device))))
        return out

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        """Per request (context, gen_kwargs): the greedy continuation, cut before the first stop
        string in gen_kwargs["until"]."""
        out = []
        for req in requests:
            ctx, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(kwargs.get("max_gen_toks", self.max_gen_tokens))
            prompt = self._encode(ctx)[-max(self.context - n, 1):]
            ids = continue_text(self.model, self.family, [prompt], self.tok.special, n, 1)[0]
            text = self.tok.decode(ids, skip_special=True)
            cut = min([text.find(u) for u in until if u and u in text] or [len(text)])
            out.append(text[:cut])
        return out


def run_lm_eval(model: nn.Module, family: Family, tokenizer: Tokenizer, tasks: Sequence[str],
                include_path: str | None = None,
                limit: int | None = None, context: int = 256, batch_size: int = 16, num_fewshot: int = 0,
                seed: int = 0) -> dict[str, float]:
    """Run lm_eval tasks 0-shot on the model; returns {"lm_eval/<task>/<metric>": value} for
    every numeric metric (stderr left out) and "lm_eval/mean_acc" over the tasks' acc.
    include_path: a folder of extra task YAMLs (then only those and lm_eval's own are known)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = None
    if include_path:  # indexing lm_eval's own task files takes seconds: skip it when not needed
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if not set(tasks) <= set(manager.all_tasks):
            manager = None
    if manager is None:
        manager = TaskManager(include_path=include_path)
    res = lm_eval.simple_evaluate(model=SuiteLM(model, family, tokenizer, context, batch_size), tasks=list(tasks),
                                  task_manager=manager, num_fewshot=num_fewshot, limit=limit, bootstrap_iters=0,
                                  log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed)
    out: dict[str, float] = {}
    for task, metrics in res["results"].items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if isinstance(value, (int, float)) and "stderr" not in name and name != "sample_len":
                out[f"lm_eval/{task}/{name}"] = float(value)
    accs = [out[f"lm_eval/{t}/acc"] for t in tasks if f"lm_eval/{t}/acc" in out]
    if accs:
        out["lm_eval/mean_acc"] = sum(accs) / len(accs)
    return out
