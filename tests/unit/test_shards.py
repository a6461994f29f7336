"""Shard lists from patterns (data/shards.py): the order the readers' saved positions index into.

expand_shards only looks at names, so the shards here are empty files.
"""

from __future__ import annotations

import pytest

from data.shards import expand_shards


def _touch(tmp_path, *names: str) -> list[str]:
    paths = []
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        paths.append(str(path))
    return paths


def test_shard_patterns(tmp_path):
    paths = _touch(tmp_path, "shard-000.tar", "shard-001.tar", "shard-002.tar")
    assert expand_shards(str(tmp_path / "shard-{000..002}.tar"), "shard") == paths
    assert expand_shards([paths[2], str(tmp_path / "shard-00[01].tar")], "shard") == [paths[2], paths[0], paths[1]]


def test_globs_sorted_order_kept_duplicates_dropped(tmp_path):
    b, a, c = _touch(tmp_path, "b.jsonl", "a.jsonl", "sub/c.jsonl")
    (tmp_path / "dir.jsonl").mkdir()  # a directory that a glob matches is not a file
    assert expand_shards(str(tmp_path / "*.jsonl"), "text file") == [a, b]
    assert expand_shards(tmp_path / "b.jsonl", "text file") == [b]  # a Path; strings come back
    assert expand_shards([b, str(tmp_path / "*.jsonl"), a], "text file") == [b, a]
    assert expand_shards([str(tmp_path / "**" / "*.jsonl")], "text file") == [a, b, c]  # ** recurses


def test_brace_ranges_keep_width_and_nest(tmp_path):
    paths = _touch(tmp_path, *(f"r{i}-{j:02d}.tar" for i in (8, 9) for j in (9, 10)))
    assert expand_shards(str(tmp_path / "r{8..9}-{09..10}.tar"), "shard") == paths


def test_errors_name_the_files(tmp_path):
    with pytest.raises(ValueError, match="empty shard list"):
        expand_shards([], "shard")
    with pytest.raises(ValueError, match="empty text file list"):
        expand_shards([], "text file")
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards(str(tmp_path / "nothing-*.tar"), "shard")
    with pytest.raises(FileNotFoundError, match="no text files match"):
        expand_shards(str(tmp_path / "*.parquet"), "text file")
    with pytest.raises(FileNotFoundError, match=r"text file .*missing\.jsonl does not exist"):
        expand_shards(str(tmp_path / "missing.jsonl"), "text file")
    _touch(tmp_path, "shard-000.tar")
    with pytest.raises(FileNotFoundError, match=r"shard .*shard-001\.tar does not exist"):
        expand_shards(str(tmp_path / "shard-{000..001}.tar"), "shard")
