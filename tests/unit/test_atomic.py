"""data/atomic.py: a write that fails leaves the old file or directory as it was, and no
temporary behind, and its error names the final path."""

from __future__ import annotations

import errno

import pytest
import torch

from data.atomic import open_atomic, save_atomic, write_dir_atomic, write_text_atomic


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


def test_a_full_disk_names_the_final_path_and_leaves_no_temporary(tmp_path, full_disk):
    """conftest's full_disk fails every write with ENOSPC, which names no file."""

    def in_pieces(path):
        with open_atomic(path) as f:
            f.write("x\n")

    writers = {"a.json": lambda p: write_text_atomic(p, "{}"), "b.pt": lambda p: save_atomic(torch.zeros(3), p),
               "c.jsonl": in_pieces}
    for name, write in writers.items():
        with pytest.raises(OSError) as info:
            write(tmp_path / name)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / name), name
    assert list(tmp_path.iterdir()) == []


def test_torchs_short_write_on_a_full_disk_becomes_enospc(tmp_path, monkeypatch):
    # What torch really raises when the disk fills (seen on a 200 kB tmpfs): a RuntimeError
    # with no errno. Injected here, with the disk reported full.
    import shutil
    from collections import namedtuple

    def short_write(obj, f):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", short_write)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6, 0))
    with pytest.raises(OSError) as err:
        save_atomic({"w": torch.zeros(100)}, tmp_path / "x.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))  # room left: not a full disk
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_atomic({"w": torch.zeros(100)}, tmp_path / "x.pt")
