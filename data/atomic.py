"""Atomic writes: write a temporary file (or directory) beside the final name, then rename it
over that name, so a crash or a kill never leaves a half-written file under it (STYLE: writes
are atomic). Used for data files, manifests, autoencoders, run directories and checkpoints.

    write_text_atomic(path, text)
    write_bytes_atomic(path, data)
    save_atomic(obj, path)                          # torch.save
    with open_atomic(path) as f: f.write(...)       # a file written in pieces
    write_dir_atomic(directory, lambda tmp: ...)    # a directory built whole, then swapped in

An OSError while writing (ENOSPC, EACCES, ...) is raised with the final name as its filename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, TextIO


def _named(exc: BaseException, tmp: Path, path: Path) -> BaseException:
    """An OSError about the temporary file (or about no file: a write's ENOSPC names none)
    retold about the final name, the one a user can act on ("disk full while writing <path>")."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, str(tmp)):
        return OSError(exc.errno, exc.strerror, str(path))  # the subclass for the errno (PermissionError, ...)
    return exc


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if (named := _named(exc, tmp, path)) is not exc:
            raise named from exc
        raise


def _write(tmp: Path, data: str | bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: _write(tmp, text))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: _write(tmp, data))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested dict/list/tuple: what torch.save of it takes, nearly."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_torch(obj, path: Path) -> None:
    """torch.save into `path`, flushed and fsynced. torch reports a full disk only as
    "[enforce fail ...] unexpected pos N vs M", with no errno, whether given a path or a file:
    a failed write where the disk has no room left for the tensors is OSError ENOSPC naming
    `path` instead."""
    import torch  # here, so the text writers stay importable without torch

    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except RuntimeError as exc:
        if shutil.disk_usage(Path(path).parent).free < tensor_bytes(obj):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
        raise


def save_atomic(obj, path: Path) -> None:
    """torch.save, atomically."""
    _atomic(path, lambda tmp: save_torch(obj, tmp))


@contextlib.contextmanager
def open_atomic(path: Path) -> Iterator[TextIO]:
    """A text file (utf-8) to write in pieces; it appears under `path` only if the block ends
    without an exception, and is deleted otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if (named := _named(exc, tmp, path)) is not exc:
            raise named from exc
        raise


def write_dir_atomic(directory: Path, write: Callable[[Path], None], tmp: Path | None = None,
                     aside: Path | None = None, sync: Callable[[Path], None] | None = None) -> Path:
    """Build a directory with write(tmp), then put it in place of `directory`. An existing one is
    first moved aside (a directory cannot be renamed over a non-empty one) and deleted after, so
    a reader never sees a half-written directory under the name. tmp / aside: the temporary
    names (default hidden names beside it, with this pid); sync(parent) runs after the rename
    (an fsync of the parent directory, for checkpoints). Returns directory."""
    directory = Path(directory)
    tmp = tmp or directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    aside = aside or directory.with_name(f".{directory.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (named := _named(exc, tmp, directory)) is not exc:
            raise named from exc
        raise
    moved = directory.exists()
    if moved:
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(directory, aside)
    os.replace(tmp, directory)
    if sync is not None:
        sync(directory.parent)
    if moved:
        shutil.rmtree(aside, ignore_errors=True)
    return directory
