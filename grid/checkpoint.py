"""Checkpoints that survive preemption (STYLE.md principles 7 and 8; issue 5, "Checkpoints").

A checkpoint is one directory `step_<8 digits>/` holding `state.pt` (whatever dict the trainer
hands over: model, optimizer and scheduler state dicts, step, elements seen, data-stream state,
RNG states from `rng_state()`) and `meta.json` (step, size and sha256 of `state.pt`).

Atomicity: everything is written into a hidden temp directory `.tmp-step_<8 digits>-<host>-<pid>`,
`meta.json` last, each file fsynced, and the directory is renamed into place. So a crash, a
SIGKILL or a full disk leaves at worst a temp directory (ignored, cleaned later) and never a
directory under a final name that looks complete. A checkpoint that is damaged anyway (missing
meta, checksum mismatch, unloadable) is skipped with a warning by `latest()`, which then falls
back to the previous one: a bad checkpoint never stops a resume.

One writer per directory: rank 0 of one run (the launcher guarantees a run runs once). The
state must be a full (gathered) state; sharded FSDP checkpoints are not handled here.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from data.atomic import write_dir_atomic
from grid.faults import fault_point

STATE_FILE, META_FILE = "state.pt", "meta.json"
_FINAL = re.compile(r"^step_(\d{8})$")
_TEMP = re.compile(r"^\.tmp-(?:old-)?step_\d{8}-(?P<host>.+)-(?P<pid>\d+)$")


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX needs the directory fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be trusted; `latest()` skips it with a warning."""


class CheckpointManager:
    """Saves and finds checkpoints under `directory`, keeping the newest `keep` of them."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (got {keep}): the newest checkpoint is never pruned")
        self.directory, self.keep = Path(directory), keep
        self._host, self._pid = socket.gethostname(), os.getpid()

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def steps(self) -> list[int]:
        """Steps of the directories named like checkpoints, ascending (not validated)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir()
                      if (m := _FINAL.match(p.name)) and p.is_dir())

    def save(self, step: int, state: dict) -> Path:
        """Write `state` as the checkpoint for `step` atomically, then prune old ones.

        Saving a step that already exists replaces it (e.g. a preemption right after a periodic
        save). Returns the checkpoint directory."""
        if step < 0 or step >= 10**8:
            raise ValueError(f"step {step} does not fit the 8-digit checkpoint name")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clean_temps(writer=True)
        final = self.path(step)

        def write(tmp: Path) -> None:
            state_path = tmp / STATE_FILE
            with open(state_path, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            fault_point("checkpoint")
            # meta.json last: its presence with a matching checksum is what marks the state complete.
            meta = {"step": step, "file": STATE_FILE, "bytes": state_path.stat().st_size,
                    "sha256": _sha256(state_path), "saved_at": time.time()}
            with open(tmp / META_FILE, "w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)

        tag = f"{final.name}-{self._host}-{self._pid}"  # _TEMP's names: a later writer cleans them up
        write_dir_atomic(final, write, tmp=self.directory / f".tmp-{tag}", aside=self.directory / f".tmp-old-{tag}",
                         sync=_fsync_dir)
        self._prune(just_saved=step)
        return final

    def load(self, step: int, map_location: str | torch.device = "cpu") -> dict:
        """The state saved for `step`; raises CorruptCheckpoint if it cannot be trusted."""
        path = self.path(step)
        try:
            meta = json.loads((path / META_FILE).read_text())
        except FileNotFoundError:
            raise CorruptCheckpoint(f"{path}: no {META_FILE} (half-written)") from None
        except (OSError, ValueError) as exc:
            raise CorruptCheckpoint(f"{path}: unreadable {META_FILE} ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("step") != step or "sha256" not in meta:
            raise CorruptCheckpoint(f"{path}: {META_FILE} does not describe step {step}: {meta!r}")
        state_path = path / meta.get("file", STATE_FILE)
        try:
            digest = _sha256(state_path)
        except OSError as exc:
            raise CorruptCheckpoint(f"{path}: cannot read {state_path.name} ({exc})") from exc
        if digest != meta["sha256"]:
            raise CorruptCheckpoint(f"{path}: checksum mismatch for {state_path.name} "
                                    f"({digest[:12]} on disk, {str(meta['sha256'])[:12]} in {META_FILE})")
        try:
            # weights_only=False: the state holds numpy/python RNG states; the file is our own,
            # checksum-verified output, never a downloaded one.
            state = torch.load(state_path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CorruptCheckpoint(f"{path}: {state_path.name} does not load "
                                    f"({exc.__class__.__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise CorruptCheckpoint(f"{path}: {state_path.name} holds a {type(state).__name__}, not a dict")
        return state

    def latest(self, map_location: str | torch.device = "cpu") -> tuple[int, dict] | None:
        """(step, state) of the newest checkpoint that loads and verifies, or None if there is
        none. Damaged ones are skipped with a warning naming them (and left on disk)."""
        self._clean_temps(writer=False)
        for step in reversed(self.steps()):
            try:
                return step, self.load(step, map_location)
            except CorruptCheckpoint as exc:
                warnings.warn(f"skipping checkpoint {exc}", stacklevel=2)
        return None

    def _prune(self, just_saved: int) -> None:
        """Remove all but the newest `keep` checkpoint directories; the one just written (known
        good, so the newest complete one) always stays."""
        steps = self.steps()
        keep = set(steps[-self.keep:]) | {just_saved}
        for step in steps:
            if step not in keep:
                shutil.rmtree(self.path(step), ignore_errors=True)

    def _clean_temps(self, writer: bool) -> None:
        """Delete leftover temp directories of writers that are gone.

        A temp dir from this host whose process is dead is always safe to delete. The writer
        (the one process allowed to save here) also deletes those from other hosts: after a
        SLURM requeue the run lands on another node and the old writer is gone. Readers (other
        ranks calling latest()) leave other hosts' temp dirs alone."""
        if not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            m = _TEMP.match(p.name)
            if not m:
                continue
            pid, host = int(m.group("pid")), m.group("host")
            if host == self._host:
                stale = pid != self._pid and not _pid_alive(pid)
            else:
                stale = writer
            if stale:
                shutil.rmtree(p, ignore_errors=True)


def rng_state() -> dict:
    """The global random streams: python `random`, numpy's legacy global generator, torch CPU
    and every CUDA device's generator (None without CUDA)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned, so a resumed run draws the same numbers."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is None:
        return
    if not torch.cuda.is_available():
        warnings.warn("checkpoint holds CUDA RNG states but CUDA is unavailable: GPU random streams "
                      "are not restored", stacklevel=2)
        return
    if len(cuda) != torch.cuda.device_count():
        warnings.warn(f"checkpoint holds {len(cuda)} CUDA RNG states but {torch.cuda.device_count()} "
                      f"devices are visible: restoring the first {min(len(cuda), torch.cuda.device_count())}",
                      stacklevel=2)
    for i, s in enumerate(cuda[:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(s.cpu(), i)


class PreemptionFlag:
    """Turns SIGUSR1/SIGUSR2/SIGTERM (SLURM's warning before a preemption or time limit;
    submitit asks for USR2) and SIGHUP (a closed terminal) into a flag.

    The handler only sets the flag; the training loop polls `requested` at each step boundary,
    saves a checkpoint and exits. Saving inside the handler would be wrong: Python runs handlers
    between bytecodes of the main thread, so it could fire halfway through optimizer.step() and
    save parameters some of which are updated and some not, with a step count that matches
    neither. Previous handlers come back on close() or on leaving the `with` block.
    Must be created in the main thread (a Python rule for signal handlers).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM,
                                                   signal.SIGHUP)) -> None:
        self.signum: int | None = None  # the last signal received
        self.received: list[int] = []  # every distinct signal, in order (SLURM may send two)
        self._previous: dict[int, object] = {}
        for s in signals:
            self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        if signum not in self.received:
            self.received.append(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def close(self) -> None:
        for s, previous in self._previous.items():
            # None means the previous handler was not installed from Python: the default is
            # the closest we can restore.
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> PreemptionFlag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
