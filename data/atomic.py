"""Atomic file writes: write a temporary file in the same directory, then rename it over the
final name, so a crash or a kill never leaves a half-written file under that name (STYLE:
writes are atomic). Used for data files, manifests and run directories alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def save_atomic(obj, path: Path) -> None:
    """torch.save, atomically."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))
