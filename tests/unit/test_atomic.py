"""data/atomic.py: a write that fails leaves the old file or directory as it was, and no
temporary behind."""

from __future__ import annotations

import pytest

from data.atomic import open_atomic, write_dir_atomic, write_text_atomic


def test_write_dir_atomic_swaps_whole_directories_and_survives_a_failed_write(tmp_path):
    target = tmp_path / "ckpt"
    write_dir_atomic(target, lambda d: (d / "a").write_text("1"))
    write_dir_atomic(target, lambda d: (d / "b").write_text("2"))  # replaces, never merges
    assert sorted(p.name for p in target.iterdir()) == ["b"]

    def broken(d):
        (d / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir_atomic(target, broken)
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # the old one, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left


def test_open_atomic_keeps_nothing_of_a_failed_block(tmp_path):
    path = tmp_path / "train.jsonl"
    write_text_atomic(path, "old\n")
    with pytest.raises(ValueError):
        with open_atomic(path) as f:
            f.write("new, half")
            raise ValueError("a split is empty")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    with open_atomic(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n"
