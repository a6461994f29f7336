"""Atomic writes: write a temporary file (or directory) beside the final name, then rename it
over that name, so a crash or a kill never leaves a half-written file under it (STYLE: writes
are atomic). Used for data files, manifests, autoencoders, run directories and checkpoints.

    write_text_atomic(path, text)
    write_bytes_atomic(path, data)
    save_atomic(obj, path)                          # torch.save
    with open_atomic(path) as f: f.write(...)       # a file written in pieces
    write_dir_atomic(directory, lambda tmp: ...)    # a directory built whole, then swapped in
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, TextIO


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(data))


def save_atomic(obj, path: Path) -> None:
    """torch.save, atomically."""
    import torch  # here, so the text writers stay importable without torch

    _atomic(path, lambda tmp: torch.save(obj, tmp))


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
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
