"""One run, end to end: data stream, model, AdamW with the paper's schedule, checkpoints, and
the run directory (DESIGN: config.yaml, metrics.jsonl, evals.json, status.json).

    python grid/train.py RUN_DIR [--checkpoint-dir DIR]      # a run directory a launcher wrote
    python grid/train.py --config FILE [key=value ...] [--results-dir DIR] [--checkpoint-dir DIR]

The run directory is the message (lingua's recipe): the launcher writes the resolved
config.yaml once (grid/runs.py `write_run_config`), and every worker, local, SLURM or torchrun,
calls `train(load_config(run_dir / "config.yaml"), ...)`. The second form is for a config
outside any sweep (results/adhoc/<run_id>/). The family (model/spec.py, baselines/spec.py)
supplies the model, its loss terms and its recipe: nothing here branches on it. A run resumes
from its latest complete checkpoint (model, optimizer, schedule, step, elements seen, stream
position and every RNG state), so a run killed at any step and started again ends exactly where
an uninterrupted one does; metrics lines written after that checkpoint by the killed process
are dropped on resume (a torn last line too). SIGUSR1 / SIGUSR2 / SIGTERM / SIGHUP checkpoint
at the next step boundary and exit. A run that raises, or whose loss is not finite, is marked
failed with its error in status.json. A run that is done already is left as it is: train()
returns at once (grid/runs.py states the invariant). status.json "notes" lists what a launcher
shows as the run ends: a resume, a checkpoint fallback, skipped data.

At the end a run records its held-out losses (evals/held_out.py; also every eval_every steps
in metrics.jsonl) and the benchmarks of evals/harness.py (settings: the config's `eval.*`) in
evals.json. With tensorboard=true the metrics lines are also TensorBoard scalars in
RUN_DIR/tensorboard/ (grid/tensorboard_curves.py); metrics.jsonl stays the record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from data.atomic import write_text_atomic
from data.embedded import EmbeddedData
from data.stream import MixedStream
# The benchmark stack is imported with the trainer (about 1 s), not when a run ends: a run that
# lives for hours then evaluates with the code it trained with, whatever was edited meanwhile.
from evals.harness import evaluate as benchmarks
from evals.held_out import held_out_losses
from grid.checkpoint import CheckpointManager, PreemptionFlag, rng_state, run_checkpoints, set_rng_state
from grid.config import ConfigError, RunConfig, load_config, resolved, stream_config
from grid.distributed import Dist, full_state, load_full_state, unwrap
from grid.faults import fault_point
from grid.family import family_for
from grid.identity import LEGACY_DATA, bind_data, run_id
from grid.provenance import code_version, machine
from grid.runs import (DEFAULT_CHECKPOINTS, DEFAULT_RESULTS, REPO_ROOT, RunLock, RunLocked, read_status, run_state,
                       slurm_job_id, write_run_config)
from grid.tensorboard_curves import Curves, summary_writer
from model.batch import PackedBatch
from model.family import Family, combine

# parallel=auto shards with FSDP2 from this many parameters (embeddings included): AdamW in
# fp32 keeps 16 bytes per parameter, 16 GB at 1B, too much to replicate on every GPU with
# activations beside it.
FSDP_MIN_PARAMS = 1_000_000_000


def write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to min_ratio of the peak (paper sec 4.1: 4000 warmup
    steps, cosine to 1.5e-5 from 3e-4), flat at the minimum past `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_for(model: torch.nn.Module, lr: float, betas: tuple[float, float], eps: float,
                  weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norm gains and biases shrinks them for
    nothing. Fused (one kernel over all parameters, on CPU and CUDA): measured 6% faster per
    step at cpu-0.11M than the default multi-tensor path (bench/RESULTS.md)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=tuple(betas), eps=eps, fused=True)


def _device(cfg: RunConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def batch_loss(model: torch.nn.Module, family: Family, batch: PackedBatch, generator: torch.Generator,
               dist: Dist = Dist()) -> tuple[torch.Tensor, dict[str, float]]:
    """(objective to backpropagate, global means to log) for this rank's share of the global
    batch. The family's draws (Transfusion: timesteps and noise) are made for the whole global
    batch on every rank, so each image gets the same draw whatever the world size."""
    local, images = dist.shard(batch)
    draws = family.shard_draws(family.draw(batch, generator), images)
    terms = family.loss_terms(model, local, draws)
    return combine(terms, family.weights, dist.sum if dist.active else None, dist.world)


def evaluate(model, family: Family, cfg: RunConfig, data: EmbeddedData, device, dist: Dist = Dist()) -> dict:
    """The held-out losses (evals/held_out.py) of the model under training."""
    def loss_means(batch: PackedBatch, gen: torch.Generator) -> dict[str, float]:
        with _autocast(cfg, device):
            return batch_loss(model, family, batch, gen, dist)[1]

    model.eval()
    out = held_out_losses(family, data, cfg.data.dataset, stream_config(cfg), loss_means, device)
    model.train()
    return out


def final_losses(model, family: Family, cfg: RunConfig, data: EmbeddedData, device, step: int, elements: int,
                 dist: Dist = Dist()) -> dict:
    """evals.json before the benchmarks: the held-out losses, and the three N (DESIGN "Element
    accounting") with 6ND for each, so analysis can switch."""
    counts = family.param_counts()
    out = evaluate(model, family, cfg, data, device, dist=dist)
    out.update(step=step, elements=elements, flops=6 * counts["n_nonembedding"] * elements, **counts,
               **{f"flops_{k[2:]}": 6 * v * elements for k, v in counts.items()})
    return out


def _autocast(cfg: RunConfig, device: torch.device):
    """bf16 autocast for precision=bf16 (paper: bf16 on GPUs); fp32 runs without it."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def train(cfg: RunConfig, results_dir: Path = DEFAULT_RESULTS, checkpoint_dir: Path = DEFAULT_CHECKPOINTS,
          sweep: str = "adhoc") -> Path:
    """Run (or resume) one run; returns its run directory. With several processes (torchrun, or
    the tasks of a SLURM job) every rank calls this; rank 0 alone writes the run directory."""
    cfg = resolved(cfg)
    cfg.validate()
    if cfg.tensorboard:
        summary_writer()  # a missing package is a one-line error before anything is written
    cfg = bind_data(cfg)  # its fingerprint is part of the id: a run on other data is another run
    rid = run_id(cfg)
    run_dir = Path(results_dir) / sweep / rid
    device = _device(cfg)
    dist = Dist.from_env(device)
    device = dist.device(device.type)
    lock, refused, state, home = RunLock(run_dir), None, None, None
    earlier: dict = {}
    if dist.is_main and run_state(run_dir) == "done":
        state = "done"  # final: said without the lock, which a read-only finished sweep could not take
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.__enter__()  # two launches of one sweep never run a run at once
        except RunLocked as exc:
            refused = str(exc)
        else:
            # Under the lock: a launch that waited for another to finish this run must not run
            # it again, and a finished run's files are never rewritten (grid/runs.py).
            state = run_state(run_dir)
            if state in ("done", "corrupt"):
                lock.__exit__()
            else:
                earlier = read_status(run_dir) or {}
                home = str(run_checkpoints(checkpoint_dir, sweep, rid, run_dir, earlier.get("checkpoint_dir")))
    refused, state, home = dist.broadcast((refused, state, home))
    if refused:
        raise RunLocked(refused)
    if state == "corrupt":
        raise ValueError(f"{run_dir}/status.json is corrupt: fix it, or delete it to rerun the run")
    if state == "done":
        print(f"[train] {rid} is done already: its files are left as they are "
              f"(python -m grid.evaluate {run_dir} re-scores it)", file=sys.stderr, flush=True)
        return run_dir
    status = {"run_id": rid, "state": "running", "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.time(), "slurm_job_id": slurm_job_id(), "world_size": dist.world,
              "slurm_restarts": int(os.environ.get("SLURM_RESTART_COUNT", 0)), "checkpoint_dir": home,
              "code": code_version(), "machine": machine(device.type)}  # grid/provenance.py
    notes: list[str] = []  # what a launcher shows: resumes, checkpoint fallbacks, skipped data
    for key in ("code", "machine"):  # a resume on other code or hardware: the run is a mix, and says so
        if earlier.get(key) and earlier[key] != status[key]:
            notes.append(f"resumed with another {key} than it started on: was {json.dumps(earlier[key], sort_keys=True)}")
    try:
        if dist.is_main:
            write_run_config(run_dir, cfg)  # written by the launcher already, unless run directly
            write_json(run_dir / "status.json", status)
            print(f"[train] {rid}: training on {status['host']} (pid {status['pid']})", file=sys.stderr, flush=True)
        ckpt = CheckpointManager(home)
        if dist.is_main:  # before anything is loaded from it: these checkpoints must be this run's
            ckpt.bind({"run_id": rid, "run_dir": str(run_dir.resolve()), "data": cfg.data.fingerprint})
        dist.barrier()
        with _noting_warnings(notes):
            state, signals = _run(cfg, run_dir, ckpt, device, dist, notes)
        status.update(state=state, finished=time.time(), signals=signals)
    except Exception as exc:  # recorded, then re-raised: the caller decides what continues
        first = (str(exc).strip().splitlines() or [""])[0]  # the one line a launcher shows; the rest is in traceback
        status.update(state="failed", error=f"{type(exc).__name__}: {first}", traceback=traceback.format_exc(),
                      finished=time.time())
        raise
    finally:
        if dist.is_main:
            status["notes"] = notes
            if status["state"] == "done":
                fault_point("status")
            write_json(run_dir / "status.json", status)
            lock.__exit__()
    dist.barrier()  # the other ranks return once the run's final status is on disk
    return run_dir


@contextmanager
def _noting_warnings(notes: list[str]):
    """Warnings show in the run's log as usual; this suite's own (checkpoint fallbacks, skipped
    data: the ones a launcher must show) are also added to `notes`, once each."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        show = warnings.showwarning

        def note(message, category, filename, lineno, file=None, line=None):
            if Path(filename).resolve().is_relative_to(REPO_ROOT) and str(message) not in notes:
                notes.append(str(message))
            show(message, category, filename, lineno, file, line)

        warnings.showwarning = note
        yield


def _run(cfg: RunConfig, run_dir: Path, ckpt: CheckpointManager, device: torch.device,
         dist: Dist, notes: list[str]) -> tuple[str, list[str]]:
    """Train to D elements (or to a preemption signal); returns (state, names of the signals
    received; "peer" where another rank received them). A resume is added to `notes`."""
    data = EmbeddedData(cfg.data.data_dir or None)
    family = family_for(cfg, data)
    torch.manual_seed(cfg.seed)
    raw = family.build().to(device)
    counts = family.param_counts()
    fsdp = dist.active and (cfg.parallel == "fsdp" or (cfg.parallel == "auto" and
                                                        counts["n_with_embeddings"] >= FSDP_MIN_PARAMS))
    model = dist.wrap(raw, fsdp)
    if cfg.compile and device.type == "cuda":
        model = torch.compile(model)
    o = cfg.optim
    opt = optimizer_for(model, o.lr, o.betas, o.eps, o.weight_decay)
    total = cfg.steps
    warmup = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, cfg.optim.min_lr_ratio))
    tok = data.tokenizer
    stream = MixedStream(stream_config(cfg), tok.special, family.elements_per_image,
                         data.text_documents("train", seed=cfg.seed),
                         data.pairs(cfg.data.dataset, "train", family.image_kind, seed=cfg.seed), tok.encode)
    # A CPU generator on every device: the same noise on CPU and GPU, and identical on all ranks.
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    step, elements = 0, 0
    latest = ckpt.latest()
    if latest is not None:
        step, saved = latest
        load_full_state(model, opt, saved["model"], saved["optimizer"], fsdp)
        sched.load_state_dict(saved["scheduler"])
        stream.load_state_dict(saved["data"])
        set_rng_state(saved["rng"])
        gen.set_state(saved["generator"])
        elements = saved["elements"]
        notes.append(f"resumed from the checkpoint at step {step} ({elements:,} elements)")
    metrics_path = run_dir / "metrics.jsonl"
    if dist.is_main:
        dropped = _truncate_metrics(metrics_path, step)
        if dropped:
            notes.append(f"dropped {dropped} metrics line(s) past step {step}, written after its checkpoint")
    flops_per_element = 6 * counts["n_nonembedding"]

    def save() -> None:
        model_state, opt_state = full_state(model, opt, fsdp)  # a collective under FSDP
        if dist.is_main:
            ckpt.save(step, {"model": model_state, "optimizer": opt_state, "scheduler": sched.state_dict(),
                             "data": stream.state_dict(), "rng": rng_state(), "generator": gen.get_state(),
                             "elements": elements, "step": step})
        dist.barrier()

    model.train()
    start = time.time()
    with PreemptionFlag() as preempt, open(metrics_path, "a") if dist.is_main else nullcontext() as metrics, \
            Curves(run_dir, step, enabled=cfg.tensorboard and dist.is_main) as curves:
        while elements < cfg.D:
            batch = stream.next_batch()
            batch.check()  # on the host: on CUDA the models' own shape checks would stall each step
            batch = batch.to(device)
            with _autocast(cfg, device):
                loss, parts = batch_loss(model, family, batch, gen, dist)
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"loss is {parts['loss']} at step {step}: lower optim.lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            step += 1
            elements += batch.num_elements
            if dist.is_main:
                record = {"step": step, "elements": elements, "flops": flops_per_element * elements,
                          "lr": sched.get_last_lr()[0], "grad_norm": _local(grad_norm),
                          "seconds": round(time.time() - start, 3), **parts}
                line = json.dumps(record) + "\n"
                metrics.write(line[:len(line) // 2])
                metrics.flush()
                fault_point("metrics")  # tests: a kill here leaves a torn last line
                metrics.write(line[len(line) // 2:])
                metrics.flush()
                curves.add(record)
            if cfg.eval_every and step % cfg.eval_every == 0 and elements < cfg.D:
                held_out = evaluate(model, family, cfg, data, device, dist=dist)
                if dist.is_main:
                    record = {"step": step, "elements": elements, **held_out}
                    metrics.write(json.dumps(record) + "\n")
                    curves.add(record)
            # Ranks may see a signal at different steps: agree on it, or one rank would leave
            # the others waiting in a collective.
            stop = bool(dist.sum(torch.tensor([float(preempt.requested)]))[0]) if dist.active else preempt.requested
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or stop:
                curves.flush()  # first: the steps a checkpoint covers are on disk before it exists
                save()
                if stop:
                    return "preempted", [signal.Signals(n).name for n in preempt.received] or ["peer"]
    save()
    evals = final_losses(model, family, cfg, data, device, step, elements, dist)
    fault_point("evaluation")
    if dist.is_main:
        if fsdp:  # the samplers need whole parameters on one process
            evals["meta/benchmarks"] = "skipped under FSDP: run python -m grid.evaluate RUN_DIR on one GPU"
        else:
            evals.update(benchmarks(unwrap(model), family, data, cfg.data.dataset,
                                    replace(cfg.eval, text_context=cfg.seq_len), captions=cfg.data.captions))
        write_json(run_dir / "evals.json", evals)
    return "done", []


def _local(value: torch.Tensor) -> float:
    """A float from a tensor or an FSDP2 DTensor (whose value is spread over ranks)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def _truncate_metrics(path: Path, step: int) -> int:
    """Keep only metrics up to the resumed step: later lines came from a process that died
    before its next checkpoint, and the resumed run will write them again. A torn last line
    (a kill mid-write) is one of those; a bad line before the last is an error naming the file
    and the line. Returns how many lines were dropped."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError as exc:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path} line {i + 1} is not JSON ({exc}): delete that line, then relaunch") from None
        if record["step"] <= step:
            keep.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in keep))
    return len(lines) - len(keep)


def run_from_dir(run_dir: Path, checkpoint_dir: Path = DEFAULT_CHECKPOINTS) -> Path:
    """Train the run whose directory a launcher wrote: results/<sweep>/<run_id>/config.yaml.
    Checkpoints go to checkpoint_dir/<sweep>/<run_id>-<run dir key> (grid/checkpoint.py `run_checkpoints`)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml): launch the sweep with "
                                "python grid/launch.py --sweep NAME, or train a config with --config FILE")
    cfg = load_config(config)
    if run_id(cfg) != run_dir.name:
        raise ConfigError(f"{config} describes run {run_id(cfg)}, not {run_dir.name}: it was edited by hand; "
                          "restore it (git checkout) or launch the changed config as a new run")
    bound = bind_data(cfg)
    if run_id(bound) != run_dir.name:  # config.yaml names no fingerprint: runs from before had LEGACY_DATA
        data = f"the {cfg.data.dataset} data in {cfg.data.data_dir or 'the default data dir'} ({bound.data.fingerprint})"
        if run_state(run_dir) == "new":
            raise ConfigError(f"{config} names no data.fingerprint, and {data} is not what that means "
                              f"({LEGACY_DATA}): launch it with grid/launch.py, which records the fingerprint")
        raise ValueError(f"{run_dir.name} was trained on the data of fingerprint {LEGACY_DATA}, not {data}: "
                         "prepare that data again, or launch on this data as a new run")
    return train(cfg, run_dir.parent.parent, checkpoint_dir, run_dir.parent.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("args", nargs="*", metavar="RUN_DIR | KEY=VALUE",
                    help="results/<sweep>/<run_id> as a launcher wrote it, or key=value overrides of --config, "
                         "e.g. size=cpu-0.11M optim.lr=1e-3")
    ap.add_argument("--config", default=None, help="YAML run config (defaults otherwise), run as results/adhoc/<id>")
    ap.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    args = ap.parse_intermixed_args(argv)  # options may sit among the key=value overrides
    overrides = [a for a in args.args if "=" in a]
    run_dirs = [Path(a) for a in args.args if "=" not in a]
    if args.results_dir.exists() and not args.results_dir.is_dir():
        print(f"error: --results-dir {args.results_dir} is a file, not a directory", file=sys.stderr)
        return 2
    try:
        if run_dirs:
            if len(run_dirs) > 1 or args.config or overrides:
                raise ConfigError("give one run directory, alone: it carries its whole config "
                                  "(to change it, launch the changed config as a new run)")
            run_dir = run_from_dir(run_dirs[0], args.checkpoint_dir)
        else:
            run_dir = train(load_config(args.config, overrides), args.results_dir, args.checkpoint_dir)
    except RunLocked as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a results dir that cannot be created or written
        print(f"error: cannot write {exc.filename or args.results_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    print(json.dumps({"run_dir": str(run_dir), **json.loads((run_dir / "status.json").read_text())},
                     default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
