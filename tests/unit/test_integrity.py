"""data/integrity.py: the cheap checks that tell a whole prepared file from a damaged one, on
real files of each kind written here."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from data.integrity import damage, read_json


def _safetensors(path, n_values: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_values], "data_offsets": [0, 4 * n_values]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4 * n_values))


def test_whole_files_pass(tmp_path):
    (tmp_path / "m.json").write_text('{"a": 1}')
    (tmp_path / "t.jsonl").write_text('{"text": "café"}\n')
    torch.save({"x": torch.arange(5)}, tmp_path / "x.pt")
    _safetensors(tmp_path / "w.safetensors", 3)
    for path in tmp_path.iterdir():
        assert damage(path) is None, path
    assert damage(tmp_path) is None


def test_damage_says_what_is_wrong(tmp_path):
    cases = {"missing.json": None, "empty.json": b"", "bad.json": b'{"a": ', "latin.json": b'{"a": "\xe9"}',
             "cut.jsonl": b'{"text": "a"}\n{"text": "b', "latin.jsonl": b'{"text": "a"}\n{"text": "caf\xe9"}\n',
             "garbage.pt": b"not a tensor file"}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    torch.save(torch.zeros(100), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:-30])
    _safetensors(tmp_path / "w.safetensors", 8)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:-4])
    found = {name: damage(tmp_path / name) for name in [*cases, "cut.pt", "cut.safetensors"]}
    assert found["missing.json"] == "missing" and found["empty.json"] == "empty"
    assert found["bad.json"].startswith("not JSON: Expecting value at line 1 column 7")
    assert found["latin.json"] == "byte 0xe9 at offset 7 is not UTF-8"
    assert found["cut.jsonl"].startswith("cut short")
    assert found["latin.jsonl"] == "byte 0xe9 at offset 27 is not UTF-8"  # 14 + len('{"text": "caf')
    assert found["garbage.pt"].startswith("not a torch file") and found["cut.pt"].startswith("not a torch file")
    assert found["cut.safetensors"].startswith("cut short")
    assert damage(tmp_path).startswith("bad.json: not JSON")  # a directory: its first damaged file
    assert damage(tmp_path / "whole.pt", load=lambda p: 1 / 0) == "division by zero"


def test_utf8_offsets_across_read_chunks(tmp_path, monkeypatch):
    """The offset of a bad byte is the file's, even when a character straddles two reads."""
    from data import integrity

    monkeypatch.setattr(integrity, "_CHUNK", 4)
    (tmp_path / "t.jsonl").write_bytes('{"a": "é"}\n'.encode() + b'{"b": "\xe9"}\n')
    assert damage(tmp_path / "t.jsonl") == f"byte 0xe9 at offset {12 + 7} is not UTF-8"


def test_read_json_is_one_line_with_the_fix(tmp_path):
    (tmp_path / "m.json").write_bytes(b"\xff{}")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'm.json'} is corrupt \(byte 0xff at offset 0 is not "
                                         r"UTF-8\): delete it$"):
        read_json(tmp_path / "m.json", "delete it")
    (tmp_path / "m.json").write_text('{"steps": {}}')
    assert read_json(tmp_path / "m.json", "delete it") == {"steps": {}}
