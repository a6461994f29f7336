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

import errno
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

from data.atomic import file_sha256, save_torch, tensor_bytes, write_dir_atomic, write_text_atomic
from grid.faults import fault_point

STATE_FILE, META_FILE, OWNER_FILE = "state.pt", "meta.json", "owner.json"
_FINAL = re.compile(r"^step_(\d{8})$")
_TEMP = re.compile(r"^\.tmp-(?:old-)?step_\d{8}-(?P<host>.+)-(?P<pid>\d+)$")


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX needs the directory fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _check_space(directory: Path, need: int, final: Path) -> None:
    """OSError ENOSPC, one line naming the checkpoint, when `directory` has less than `need`
    bytes free: said before writing, and again after a write that failed (which torch reports
    without the errno)."""
    free = shutil.disk_usage(directory).free
    if free < need:
        raise OSError(errno.ENOSPC, f"disk full: the checkpoint {final} needs {need / 1e6:,.1f} MB and "
                                    f"{free / 1e6:,.1f} MB are free there; free space, then relaunch to resume")


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be trusted; `latest()` skips it with a warning."""


class ForeignCheckpoints(ValueError):
    """A checkpoint directory bound to another run (owner.json): never resumed from."""


def run_checkpoints(root: str | Path, sweep: str, run_id: str, run_dir: str | Path,
                    recorded: str | None = None) -> Path:
    """Where one run keeps its checkpoints: <root>/<sweep>/<run_id>-<8 hex of its run
    directory's absolute path>. The run dir is in the name because two results directories
    (a fresh launch beside an old one, with the default checkpoint root) hold runs of the same
    id that must not resume from each other. Where the run's status.json records another
    directory (`recorded`: a run from before this naming, or one whose root has moved) that holds
    checkpoints while this one holds none, the run resumes there; `CheckpointManager.bind`
    still checks that they are its own."""
    run_dir = Path(run_dir).resolve()
    home = Path(root).resolve() / sweep / f"{run_id}-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]}"
    if recorded and not CheckpointManager(home).steps() and CheckpointManager(recorded).steps():
        return Path(recorded)
    return home


class CheckpointManager:
    """Saves and finds checkpoints under `directory`, keeping the newest `keep` of them."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (got {keep}): the newest checkpoint is never pruned")
        self.directory, self.keep = Path(directory), keep
        self._host, self._pid = socket.gethostname(), os.getpid()

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def owner(self) -> dict | None:
        """What owner.json binds this directory to (run_id, run_dir, data fingerprint), or None
        where it has none (a directory from before the binding, or not used yet)."""
        path = self.directory / OWNER_FILE
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ForeignCheckpoints(f"{path} is unreadable ({exc}): delete {self.directory} to train the run "
                                     "from scratch") from None
        return owner if isinstance(owner, dict) else {}

    def bind(self, owner: dict) -> None:
        """Bind this directory to one run before anything is loaded from it or saved in it:
        write owner.json where there is none, else check it. ForeignCheckpoints, one line, when
        it names another run, results directory or data."""
        found = self.owner()
        if found is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.directory / OWNER_FILE, json.dumps(owner, indent=1, sort_keys=True))
            return
        differ = [k for k in sorted(owner) if found.get(k) != owner[k]]
        if differ:
            theirs = ", ".join(f"{k} {found.get(k)!r}" for k in differ)
            raise ForeignCheckpoints(f"the checkpoints in {self.directory} belong to {theirs}, not this run: pass "
                                     "another --checkpoint-dir, or delete that directory to train from scratch")

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

        need = tensor_bytes(state)
        _check_space(self.directory, need, final)

        def write(tmp: Path) -> None:
            state_path = tmp / STATE_FILE
            try:
                save_torch(state, state_path)
            except (OSError, RuntimeError) as exc:
                _check_space(self.directory, need, final)
                raise OSError(getattr(exc, "errno", None) or errno.EIO,
                              f"cannot write the checkpoint {final} ({str(exc).strip().splitlines()[0]})") from exc
            fault_point("checkpoint")
            # meta.json last: its presence with a matching checksum is what marks the state complete.
            meta = {"step": step, "file": STATE_FILE, "bytes": state_path.stat().st_size,
                    "sha256": file_sha256(state_path), "saved_at": time.time()}
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
            digest = file_sha256(state_path)
        except OSError as exc:
            raise CorruptCheckpoint(f"{path}: cannot read {state_path.name} ({exc})") from exc
        if digest != meta["sha256"]:
            raise CorruptCheckpoint(f"{path}: checksum mismatch for {state_path.name} "
                                    f"({digest[:12]} on disk, {str(meta['sha256'])[:12]} in {META_FILE})")
        try:
            state = safe_load(state_path, map_location)
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


def safe_load(path: Path, map_location: str | torch.device = "cpu"):
    """torch.load that cannot run code: tensors, numbers, strings and containers only
    (weights_only). A sha256 beside the file cannot protect it, since whoever rewrites the file
    can rewrite the sum. Checkpoints written before the RNG states became tensors hold numpy's
    state as an ndarray; the three numpy names that rebuild one are allowed, nothing else."""
    legacy_numpy = [np.dtype, np.ndarray, np.dtypes.UInt32DType, _numpy_reconstruct()]
    with torch.serialization.safe_globals(legacy_numpy):
        return torch.load(path, map_location=map_location, weights_only=True)


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def rng_state() -> dict:
    """The global random streams as tensors and numbers (so `safe_load` reads them back): python
    `random`, numpy's legacy global generator, torch CPU and every CUDA device's generator
    (None without CUDA)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned, so a resumed run draws the same numbers."""
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:  # a checkpoint from before the tensor form: numpy's own tuple
        np.random.set_state(n)
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
    submitit asks for USR2), SIGHUP (a closed terminal) and SIGINT (Ctrl-C, which a terminal
    sends to the launcher's whole process group, workers included) into a flag. A second Ctrl-C
    raises KeyboardInterrupt at once, for someone who will not wait for the checkpoint.

    The handler only sets the flag; the training loop polls `requested` at each step boundary,
    saves a checkpoint and exits. Saving inside the handler would be wrong: Python runs handlers
    between bytecodes of the main thread, so it could fire halfway through optimizer.step() and
    save parameters some of which are updated and some not, with a step count that matches
    neither. Previous handlers come back on close() or on leaving the `with` block.
    Must be created in the main thread (a Python rule for signal handlers).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM,
                                                   signal.SIGHUP, signal.SIGINT)) -> None:
        self.signum: int | None = None  # the last signal received
        self.received: list[int] = []  # every distinct signal, in order (SLURM may send two)
        self._previous: dict[int, object] = {}
        for s in signals:
            self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and signum in self.received:
            raise KeyboardInterrupt
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
