"""Shard lists: patterns (globs, WebDataset's {000..099} ranges, plain paths) -> existing files.

Shared by the streamed readers (data/text_readers.py, data/image_text.py), whose saved positions
index into this list, so the order must be the same on every machine: a glob's matches are
sorted, patterns and explicit paths keep the order given, and a file named twice is read once.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Sequence


def _expand_braces(pattern: str) -> list[str]:
    """Expand WebDataset's numeric ranges: "shard-{000..002}.tar" -> shard-000.tar .. shard-002.tar."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if m is None:
        return [pattern]
    lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [p for i in range(lo, hi + 1) for p in _expand_braces(f"{head}{i:0{width}d}{tail}")]


def expand_shards(patterns: str | Path | Sequence[str | Path], what: str) -> list[str]:
    """Existing files from a pattern (glob and/or {a..b} ranges) or a list of patterns/paths.

    Each glob's matches are sorted (`**` recurses; directories are left out); patterns keep their
    order; a file already listed is dropped. `what` names the files in errors ("shard", "text
    file"). Raises ValueError for an empty list, FileNotFoundError for a glob matching nothing or
    a missing explicit path.
    """
    given = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
    if not given:
        raise ValueError(f"empty {what} list: give paths, a glob or a {{000..099}} range")
    out: list[str] = []
    seen: set[str] = set()
    for pattern in given:
        for p in _expand_braces(str(pattern)):
            if glob.has_magic(p):
                found = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
                if not found:
                    raise FileNotFoundError(f"no {what}s match {p!r}")
            elif os.path.isfile(p):
                found = [p]
            else:
                raise FileNotFoundError(f"{what} {p} does not exist")
            out += [f for f in found if f not in seen]
            seen.update(found)
    return out
