"""One writer per data directory: an exclusive lock held while `python -m data.prepare` runs.

    with hold_lock(root / LOCK_NAME, say):
        ...  # read the manifest, build what is missing

fcntl.lockf on a file inside the directory. The kernel drops the lock when its holder exits or
dies, so a crashed prepare never leaves a stale lock; the file itself stays (removing it would
let a waiter and a newcomer lock two different files). It holds the holder's pid, which is only
used to tell a waiting prepare whom it waits for. The lock belongs to the process (POSIX record
locks), so a second Prepare in the same process is not held back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator

LOCK_NAME = ".prepare.lock"


@contextlib.contextmanager
def hold_lock(path: Path, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its parents) for the block. When another
    process holds it, say so once, naming its pid, and wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # held elsewhere (EAGAIN or EACCES, by platform)
            # Read through this descriptor: closing any other one on the file would drop our locks.
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            say(f"another python -m data.prepare (pid {holder}) is writing {path.parent}: waiting for it to finish")
            fcntl.lockf(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
