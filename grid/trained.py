"""A finished (or checkpointed) run, loaded back for evaluation:

    trained = load_trained("results/demo/<run_id>")   # config, family, model (eval mode), data, step, elements

Which checkpoint. A finished run (status.json state "done") is scored from exactly the checkpoint
at its final step, since its scores must be that model's. The final step is the last complete
line of metrics.jsonl (only the trainer writes that file, while a re-score may rebuild
evals.json), else evals.json's "step", else the newest checkpoint directory's name. A damaged or
missing final checkpoint is a CheckpointRefused error; with allow_earlier the newest earlier
checkpoint that verifies is loaded instead. A run that is not done is loaded from its latest
complete checkpoint. `Trained.note` says, in one line, whenever the model is not a finished
run's own final one (the commands print it and record it with their results).

Whose checkpoints. The directory status.json records, unless another is given. A directory that
is not that one, or whose owner binding (grid/checkpoint.py `owner`, owner.json) names another
run id, is refused unless allow_foreign (`foreign_reason` holds the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from data.embedded import EmbeddedData
from grid.checkpoint import CheckpointManager, CorruptCheckpoint
from grid.config import RunConfig, load_config
from grid.family import family_for
from grid.identity import bind_data
from grid.runs import last_metrics, read_evals, read_status
from model.family import Family

EARLIER, FOREIGN = "--allow-earlier-checkpoint", "--allow-foreign-checkpoint"  # the commands' flags


class CheckpointRefused(ValueError):
    """The checkpoint to score is not the run's own final one (damaged, missing or another
    run's): one line naming it and the fix."""


@dataclass
class Trained:
    cfg: RunConfig
    family: Family
    model: torch.nn.Module
    data: EmbeddedData
    step: int
    elements: int  # training elements seen at that checkpoint
    note: str | None = None  # why this is not a finished run's final model, where it is not


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())  # torch's load errors span many lines


def _step_in(record) -> int | None:
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def final_step(run_dir: Path, ckpt: CheckpointManager) -> int | None:
    """The step a finished run ended at (the module docstring gives the order of the sources)."""
    step = _step_in(last_metrics(run_dir))
    if step is None:
        try:
            step = _step_in(read_evals(run_dir))
        except ValueError:  # missing or corrupt
            pass
    steps = ckpt.steps()
    return step if step is not None else (steps[-1] if steps else None)


def foreign_reason(run_dir: Path, checkpoint_dir: Path, recorded: str | None) -> str | None:
    """Why checkpoint_dir holds another run's checkpoints, or None where nothing says so: it is
    not the directory the run's status.json records, or its owner binding names another run id
    (the run id is the run directory's name)."""
    if recorded and Path(checkpoint_dir).resolve() != Path(recorded).resolve():
        return f"{checkpoint_dir} is not the checkpoint directory {run_dir}/status.json records ({recorded})"
    try:
        owner = CheckpointManager(checkpoint_dir).owner()
    except ValueError:  # an unreadable owner.json: whose they are cannot be told, so not taken as ours
        return f"{checkpoint_dir}/owner.json is unreadable"
    if owner is not None and owner.get("run_id") != run_dir.resolve().name:
        return f"{checkpoint_dir} belongs to run {owner.get('run_id')!r} (its owner.json), not {run_dir.resolve().name}"
    return None


def _checkpoint(run_dir: Path, ckpt: CheckpointManager, state: str | None, allow_earlier: bool,
                device) -> tuple[int, dict, str | None]:
    """(step, saved state, note) of the checkpoint to score."""
    if state != "done":
        latest = ckpt.latest(map_location=device)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {ckpt.directory}: train the run first "
                                    "(python grid/launch.py --sweep NAME)")
        return (*latest, f"{run_dir.name} is {state or 'not started'}, not done: scored from its latest "
                         f"complete checkpoint, step {latest[0]}")
    final = final_step(run_dir, ckpt)
    if final is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}, and no final step recorded in {run_dir}")
    try:
        return final, ckpt.load(final, device), None
    except CorruptCheckpoint as exc:
        problem = f"is damaged ({_one_line(exc)})" if ckpt.path(final).is_dir() else f"is missing ({ckpt.path(final)})"
    if not allow_earlier:
        raise CheckpointRefused(f"the final checkpoint of {run_dir.name} (step {final}) {problem}: restore it, or "
                                f"pass {EARLIER} to score the newest earlier checkpoint (a less-trained model)")
    for step in reversed([s for s in ckpt.steps() if s < final]):
        try:
            state = ckpt.load(step, device)
        except CorruptCheckpoint:
            continue
        return step, state, f"scored from step {step}: the final checkpoint (step {final}) {problem}"
    raise CheckpointRefused(f"the final checkpoint of {run_dir.name} (step {final}) {problem}, and no earlier "
                            f"checkpoint in {ckpt.directory} verifies")


def load_trained(run_dir: str | Path, checkpoint_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", allow_earlier: bool = False,
                 allow_foreign: bool = False) -> Trained:
    """A run's model in eval mode, from the checkpoint the module docstring describes.
    CheckpointRefused (a ValueError, one line) for a damaged or missing final checkpoint (unless
    allow_earlier) and for another run's checkpoint directory (unless allow_foreign)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml): pass results/<sweep>/<run_id>")
    # A damaged file is a one-line ConfigError naming it; data changed since the run trained, a
    # one-line ValueError (scores on other data would not be this run's).
    cfg = bind_data(load_config(config))
    status = read_status(run_dir) or {}  # a corrupt one is a one-line ValueError naming it
    recorded = status.get("checkpoint_dir")
    if checkpoint_dir is None and not recorded:
        raise FileNotFoundError(f"{run_dir}/status.json names no checkpoint_dir: pass the checkpoint "
                                "directory of this run explicitly")
    checkpoint_dir = Path(checkpoint_dir or recorded)
    foreign = foreign_reason(run_dir, checkpoint_dir, recorded)
    if foreign and not allow_foreign:
        raise CheckpointRefused(f"{foreign}: pass this run's own, or {FOREIGN} to score another run's model")
    step, state, note = _checkpoint(run_dir, CheckpointManager(checkpoint_dir), status.get("state"),
                                    allow_earlier, device)
    if foreign:
        note = "; ".join(filter(None, [f"another run's checkpoints: {foreign}", note]))
    data = EmbeddedData(cfg.data.data_dir or None)
    family = family_for(cfg, data)
    model = family.build().to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return Trained(cfg=cfg, family=family, model=model, data=data, step=step, elements=state["elements"], note=note)
