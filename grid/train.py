"""One run, end to end: data stream, model, AdamW with the paper's schedule, checkpoints, and
the run directory (DESIGN: config.yaml, metrics.jsonl, evals.json, status.json).

    python grid/train.py --config FILE [key=value ...] [--results-dir DIR] [--checkpoint-dir DIR]

`train(cfg, ...)` is the same thing as a function (what a launcher submits). A run resumes
from its latest complete checkpoint (model, optimizer, schedule, step, elements seen, stream
position and every RNG state), so a run killed at any step and started again ends exactly where
an uninterrupted one does; metrics lines written after that checkpoint by the killed process
are dropped on resume. SIGUSR1 / SIGTERM checkpoint at the next step boundary and exit. A run
that raises, or whose loss is not finite, is marked failed with its error in status.json.

Evaluation here is the held-out losses (text next-token loss per held-out corpus, diffusion or
image-code loss on validation images); the benchmark harness adds to evals.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch

from baselines.chameleon import Chameleon, chameleon_loss
from data.atomic import write_text_atomic
from data.embedded import EmbeddedData
from data.stream import MixedStream
from grid.checkpoint import CheckpointManager, PreemptionFlag, rng_state, set_rng_state
from grid.config import RunConfig, build_model_config, load_config, resolved, run_id, stream_config, to_yaml
from grid.runs import RunLock, RunLocked, find_run, select
from model.accounting import backbone_params
from model.diffusion import Diffusion
from model.transfusion import Transfusion, transfusion_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "results"
DEFAULT_CHECKPOINTS = REPO_ROOT / "checkpoints"


def write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to min_ratio of the peak (paper sec 4.1: 4000 warmup
    steps, cosine to 1.5e-5 from 3e-4), flat at the minimum past `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    # Weight decay on matrices only: decaying norm gains and biases shrinks them for nothing.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    o = cfg.optim
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas), eps=o.eps)


class _Family:
    """What differs between the two families: image representation, model, loss."""

    def __init__(self, cfg: RunConfig, data: EmbeddedData) -> None:
        self.chameleon = cfg.family == "chameleon"
        self.kind = "vq" if self.chameleon else "kl"
        tok = data.tokenizer
        images = data.encoded(cfg.data.dataset, "val", self.kind)
        codebook = data.autoencoder(cfg.data.dataset, "vq").codebook_size if self.chameleon else None
        self.model_cfg = build_model_config(cfg, tok.vocab_size, tuple(images.shape[1:]), codebook)
        self.elements_per_image = (self.model_cfg.codes_per_image if self.chameleon
                                   else self.model_cfg.patch.num_patches)
        self.diffusion = None if self.chameleon else Diffusion(self.model_cfg.diffusion)

    def build(self) -> torch.nn.Module:
        return Chameleon(self.model_cfg) if self.chameleon else Transfusion(self.model_cfg)

    def loss(self, model, batch, generator) -> tuple[torch.Tensor, dict]:
        if self.chameleon:
            p = chameleon_loss(model, batch)
            return p.total, {"loss": p.total, "lm": p.lm, "lm_text": p.lm_text, "lm_image": p.lm_image, "z": p.z}
        p = transfusion_loss(model, self.diffusion, batch, generator)
        return p.total, {"loss": p.total, "lm": p.lm, "diffusion": p.diffusion, "z": p.z}


def _device(cfg: RunConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


@torch.no_grad()
def evaluate(model, family: _Family, cfg: RunConfig, data: EmbeddedData, device, batches: int = 4) -> dict:
    """Held-out losses from fixed draws (own seeds: evaluating never moves the training RNG)."""
    model.eval()
    out = {}
    tok = data.tokenizer
    sources = {f"text_{role}": (data.text_documents(f"heldout_{role}", seed=1), None, 1.0)
               for role in ("c4", "wiki") if data.paths.tokens(f"heldout_{role}").exists()}
    sources["images_val"] = (None, data.pairs(cfg.data.dataset, "val", family.kind, seed=1), 0.0)
    for name, (text, pairs, share) in sources.items():
        sc = stream_config(cfg)
        sc.text_share, sc.seed = share, 1
        stream = MixedStream(sc, tok.special, family.elements_per_image, text, pairs, tok.encode)
        gen = torch.Generator(device).manual_seed(1)
        sums: dict[str, float] = {}
        for _ in range(batches):
            _, parts = family.loss(model, stream.next_batch().to(device), gen)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        keys = ("lm",) if share == 1.0 else (("lm_image",) if family.chameleon else ("diffusion", "lm"))
        out.update({f"{name}/{k}": sums[k] / batches for k in keys})
    model.train()
    return out


def train(cfg: RunConfig, results_dir: Path = DEFAULT_RESULTS, checkpoint_dir: Path = DEFAULT_CHECKPOINTS,
          sweep: str = "adhoc") -> Path:
    """Run (or resume) one run; returns its run directory."""
    cfg = resolved(cfg)
    cfg.validate()
    rid = run_id(cfg)
    run_dir = Path(results_dir) / sweep / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # two launches of one sweep never run a run twice
        if not (run_dir / "config.yaml").exists():  # the id is the content: an existing file is this config
            write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        status = {"run_id": rid, "state": "running", "host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.time(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        write_json(run_dir / "status.json", status)
        try:
            state = _run(cfg, run_dir, CheckpointManager(Path(checkpoint_dir) / sweep / rid))
        except Exception as exc:  # recorded, then re-raised: the caller decides what continues
            status.update(state="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                          finished=time.time())
            write_json(run_dir / "status.json", status)
            raise
        status.update(state=state, finished=time.time())
        write_json(run_dir / "status.json", status)
    return run_dir


def _run(cfg: RunConfig, run_dir: Path, ckpt: CheckpointManager) -> str:
    device = _device(cfg)
    data = EmbeddedData(cfg.data.data_dir or None)
    family = _Family(cfg, data)
    torch.manual_seed(cfg.seed)
    model = family.build().to(device)
    opt = _optimizer(model, cfg)
    total = cfg.steps
    warmup = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, cfg.optim.min_lr_ratio))
    tok = data.tokenizer
    stream = MixedStream(stream_config(cfg), tok.special, family.elements_per_image,
                         data.text_documents("train", seed=cfg.seed),
                         data.pairs(cfg.data.dataset, "train", family.kind, seed=cfg.seed), tok.encode)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    step, elements = 0, 0
    latest = ckpt.latest()
    if latest is not None:
        step, saved = latest
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        stream.load_state_dict(saved["data"])
        set_rng_state(saved["rng"])
        gen.set_state(saved["generator"])
        elements = saved["elements"]
    metrics_path = run_dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, step)
    flops_per_element = 6 * _non_embedding(family)

    def save() -> None:
        ckpt.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "data": stream.state_dict(), "rng": rng_state(), "generator": gen.get_state(),
                         "elements": elements, "step": step})

    model.train()
    start = time.time()
    with PreemptionFlag() as preempt, open(metrics_path, "a") as metrics:
        while elements < cfg.D:
            batch = stream.next_batch().to(device)
            loss, parts = family.loss(model, batch, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss.detach())} at step {step}: lower optim.lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            step += 1
            elements += batch.num_elements
            record = {"step": step, "elements": elements, "flops": flops_per_element * elements,
                      "lr": sched.get_last_lr()[0], "grad_norm": float(grad_norm),
                      "seconds": round(time.time() - start, 3), **{k: float(v.detach()) for k, v in parts.items()}}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if cfg.eval_every and step % cfg.eval_every == 0 and elements < cfg.D:
                metrics.write(json.dumps({"step": step, "elements": elements,
                                          **evaluate(model, family, cfg, data, device)}) + "\n")
            if step % cfg.checkpoint_every == 0 or preempt.requested:
                save()
                if preempt.requested:
                    return "preempted"
    save()
    evals = evaluate(model, family, cfg, data, device)
    evals.update(step=step, elements=elements, flops=flops_per_element * elements)
    write_json(run_dir / "evals.json", evals)
    return "done"


def _non_embedding(family: _Family) -> int:
    return backbone_params(family.model_cfg.backbone)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only metrics up to the resumed step: later lines came from a process that died
    before its next checkpoint, and the resumed run will write them again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML run config (defaults otherwise)")
    ap.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    ap.add_argument("--sweep", default="adhoc", help="results/<sweep>/<run_id>/; with --run, a registered sweep")
    ap.add_argument("--run", default=None, help="run id of a registered sweep's run (grid/launch.py --dry-run)")
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. size=cpu-0.11M optim.lr=1e-3")
    args = ap.parse_args(argv)
    if args.results_dir.exists() and not args.results_dir.is_dir():
        print(f"error: --results-dir {args.results_dir} is a file, not a directory", file=sys.stderr)
        return 2
    try:
        if args.run is not None:
            from grid.sweeps import get_sweep

            cfg = find_run(select(get_sweep(args.sweep), args.overrides), args.run).cfg
        else:
            cfg = load_config(args.config, args.overrides)
        run_dir = train(cfg, args.results_dir, args.checkpoint_dir, args.sweep)
    except RunLocked as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"run_dir": str(run_dir), **json.loads((run_dir / "status.json").read_text())},
                     default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
