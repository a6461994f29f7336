"""Streamed text readers: formats, shard order, exact resume, errors (data/text_readers.py).

Every shard is written here, in tmp_path, in the formats a real corpus comes in.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os

import pytest

from data.text_readers import TextReader, TextSpec, iter_documents

def _jsonl(path, records, compress=False):
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)


def _parquet(path, texts, row_group_size, column="body"):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), column: texts}), path, row_group_size=row_group_size)


def test_readers_by_format(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"content": "one"}, {"content": ""}, {"content": "two\nlines"}])
    (tmp_path / "a.jsonl").write_bytes((tmp_path / "a.jsonl").read_bytes() + b"\n\n")
    assert list(iter_documents(TextSpec(str(tmp_path / "a.jsonl"), text_field="content"))) == ["one", "two\nlines"]
    _jsonl(tmp_path / "b.json.gz", [{"text": "zipped é"}], compress=True)
    assert list(iter_documents(TextSpec([str(tmp_path / "b.json.gz")]))) == ["zipped é"]
    (tmp_path / "c.txt").write_text("Para one\nstill one\n\n\n  \nPara two\n\nPara three")
    assert list(iter_documents(TextSpec(str(tmp_path / "c.txt"), txt_docs="paragraph"))) == \
        ["Para one\nstill one", "Para two", "Para three"]
    assert list(iter_documents(TextSpec(str(tmp_path / "c.txt")))) == [(tmp_path / "c.txt").read_text()]
    _parquet(tmp_path / "d.parquet", ["p0", None, "p2", "p3", "p4"], row_group_size=2)
    assert list(iter_documents(TextSpec(str(tmp_path / "d.parquet"), text_field="body"))) == ["p0", "p2", "p3", "p4"]


def _shards(tmp_path):
    """Ten shards of three formats; returns (spec, every document in reading order)."""
    docs = []
    for i in range(10):
        texts = [f"shard {i} doc {j}" for j in range(i % 4 + 1)]
        if i % 3 == 0:
            _jsonl(tmp_path / f"s{i:02d}.jsonl", [{"text": t} for t in texts])
        elif i % 3 == 1:
            (tmp_path / f"s{i:02d}.txt").write_text("\n\n".join(texts) + "\n")
        else:
            _parquet(tmp_path / f"s{i:02d}.parquet", texts, row_group_size=2, column="text")
        docs += texts
    return TextSpec(str(tmp_path / "s*.*"), txt_docs="paragraph", parquet_batch_rows=1), docs


def test_glob_shards_are_sorted(tmp_path):
    spec, docs = _shards(tmp_path)
    reader = TextReader(spec)
    assert [os.path.basename(p) for p in reader.shards] == sorted(os.listdir(tmp_path))
    assert list(reader) == docs


def test_resume_gives_exactly_the_rest(tmp_path):
    spec, docs = _shards(tmp_path)
    for k in range(len(docs) + 1):
        reader = TextReader(spec)
        head = [reader.next() for _ in range(k)]
        state = json.loads(json.dumps(reader.state_dict()))  # plain JSON, fit for a checkpoint
        resumed = TextReader(spec)
        resumed.load_state_dict(state)
        assert head + list(resumed) == docs, k


def test_repeat_counts_epochs_and_resumes(tmp_path):
    spec, docs = _shards(tmp_path)
    reader = TextReader(spec, repeat=True)
    first = [reader.next() for _ in range(len(docs) + 5)]
    assert first == docs + docs[:5] and reader.state_dict()["epoch"] == 1
    resumed = TextReader(spec, repeat=True)
    resumed.load_state_dict(reader.state_dict())
    assert [resumed.next() for _ in range(len(docs))] == docs[5:] + docs[:5]


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextReader(TextSpec(str(tmp_path / "missing.jsonl")))
    with pytest.raises(FileNotFoundError, match="no text files match"):
        TextReader(TextSpec(str(tmp_path / "*.parquet")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        TextReader(TextSpec(str(tmp_path / "x.csv")))
    _jsonl(tmp_path / "a.jsonl", [{"body": "x"}])
    with pytest.raises(KeyError, match="no field 'text'.*body"):
        list(iter_documents(TextSpec(str(tmp_path / "a.jsonl"))))
    _parquet(tmp_path / "p.parquet", ["x"], row_group_size=1)
    with pytest.raises(KeyError, match="no column 'text'"):
        list(iter_documents(TextSpec(str(tmp_path / "p.parquet"))))
    (tmp_path / "e1.txt").write_text("")
    (tmp_path / "e2.txt").write_text("\n \n")
    for repeat in (False, True):
        with pytest.raises(ValueError, match="no documents in 2 text file"):
            list(itertools.islice(TextReader(TextSpec(str(tmp_path / "e*.txt")), repeat=repeat), 3))
    reader = TextReader(TextSpec(str(tmp_path / "a.jsonl"), text_field="body"))
    with pytest.raises(ValueError, match="file list changed"):
        reader.load_state_dict(TextReader(TextSpec(str(tmp_path / "e*.txt"))).state_dict())


def test_a_line_that_is_not_utf8_names_the_file_its_offset_and_the_fix(tmp_path):
    good = json.dumps({"text": "fine"}).encode() + b"\n"
    (tmp_path / "a.jsonl").write_bytes(good + b'{"text": "caf\xe9"}\n')  # Latin-1, as a careless export writes it
    with pytest.raises(ValueError) as info:
        list(iter_documents(TextSpec(str(tmp_path / "a.jsonl"))))
    message = str(info.value)
    assert str(tmp_path / "a.jsonl") in message and f"line at byte {len(good)}" in message
    assert f"byte 0xe9 at offset {len(good) + 13} is not UTF-8" in message and "iconv" in message
    assert "\n" not in message


def test_ranks_read_disjoint_shards_that_cover_everything(tmp_path):
    for shard in range(5):
        with open(tmp_path / f"s{shard}.jsonl", "w") as f:
            for i in range(3):
                f.write(json.dumps({"text": f"doc {shard}.{i}"}) + "\n")
    spec = TextSpec(str(tmp_path / "s*.jsonl"))
    parts = [list(TextReader(spec, rank=r, world_size=2)) for r in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(TextReader(spec))
    with pytest.raises(ValueError, match="cannot be split over 6 ranks"):
        TextReader(spec, rank=0, world_size=6)
