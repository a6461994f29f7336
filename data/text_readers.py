"""Streamed text documents at real scale: JSONL (optionally .gz), plain text or parquet shards.

`TextReader` takes paths, globs or {000..099} ranges (data/shards.py), never loads a whole
shard, and its position (shard, offset within the shard, epoch) is saved and restored exactly,
so a resumed run reads the documents an uninterrupted one would have (DESIGN.md: resume includes
the data position). The prepared offline corpora (data/corpora.py) are read this way too.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

from data.integrity import decode_utf8
from data.shards import expand_shards

_NOT_UTF8_FIX = ("convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or if python -m data.prepare wrote it, "
                "rerun that: it rebuilds a damaged file")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".text": "txt",
           ".md": "txt", ".parquet": "parquet"}


@dataclass
class TextSpec:
    """Text files to stream: paths, glob patterns or {000..099} ranges (data/shards.py: a glob's
    shards sorted, patterns kept in order), their format (auto: by extension, .gz allowed for
    jsonl/txt), the JSON field or parquet column holding the text, and for plain text whether a
    document is a whole file ("file") or a blank-line-separated paragraph ("paragraph")."""

    paths: list[str] | str = field(default_factory=list)
    format: str = "auto"
    text_field: str = "text"
    txt_docs: str = "file"
    parquet_batch_rows: int = 1024


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown text format {fmt!r}; valid: auto, {sorted(set(FORMATS.values()))}")
        return fmt
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the format of {path} from its extension; known: {sorted(FORMATS)} "
                         f"(optionally .gz), or set format=")
    return FORMATS[ext]


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read_jsonl(path: str, spec: TextSpec, offset: int) -> Iterator[tuple[str, int]]:
    """(text, byte offset of the next line): resuming seeks straight there."""
    with _open_binary(path) as f:
        f.seek(offset)
        while line := f.readline():
            start, offset = offset, f.tell()
            if not line.strip():
                continue
            body = line.removeprefix(codecs.BOM_UTF8)  # as json.loads(bytes) does
            text = decode_utf8(body, f"{path}: line at byte {start}", _NOT_UTF8_FIX, base=start + len(line) - len(body))
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line at byte {start} is not JSON ({e}): fix or remove that line, or if "
                                 f"python -m data.prepare wrote the file, delete it and rerun that") from None
            if not isinstance(record, dict) or spec.text_field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise KeyError(f"{path}: record at byte {start} has no field {spec.text_field!r} "
                               f"(has {keys}); set text_field")
            if record[spec.text_field]:
                yield str(record[spec.text_field]), offset


def _read_txt(path: str, spec: TextSpec, offset: int) -> Iterator[tuple[str, int]]:
    """Whole file (offset 0 = unread, 1 = read) or paragraphs (byte offset after the blank line)."""
    if spec.txt_docs == "file":
        if offset == 0:
            with _open_binary(path) as f:
                text = f.read().decode("utf-8", errors="replace")
            if text.strip():
                yield text, 1
        return
    if spec.txt_docs != "paragraph":
        raise ValueError(f"txt_docs={spec.txt_docs!r}; valid: 'file', 'paragraph'")
    with _open_binary(path) as f:
        f.seek(offset)
        lines: list[bytes] = []
        while True:
            line = f.readline()
            if line.strip():
                lines.append(line)
                continue
            if lines:  # a blank line or the end closes the paragraph
                yield b"".join(lines).decode("utf-8", errors="replace").rstrip("\r\n"), f.tell()
                lines = []
            if not line:
                return


def _read_parquet(path: str, spec: TextSpec, offset: int) -> Iterator[tuple[str, int]]:
    """(text, rows consumed): resuming starts at the row group holding row `offset`."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from e

    pf = pq.ParquetFile(path)
    if spec.text_field not in pf.schema_arrow.names:
        raise KeyError(f"{path}: no column {spec.text_field!r} (has {pf.schema_arrow.names}); set text_field")
    row, group = 0, 0
    while group < pf.num_row_groups and row + pf.metadata.row_group(group).num_rows <= offset:
        row += pf.metadata.row_group(group).num_rows
        group += 1
    if group == pf.num_row_groups:
        return
    batches = pf.iter_batches(batch_size=spec.parquet_batch_rows, row_groups=range(group, pf.num_row_groups),
                              columns=[spec.text_field])
    for batch in batches:
        for text in batch.column(0).to_pylist():
            row += 1
            if row > offset and text:
                yield text, row


_READERS = {"jsonl": _read_jsonl, "txt": _read_txt, "parquet": _read_parquet}


class TextReader:
    """Documents (str) from the shards of a TextSpec, in order, with an exact saved position.

    `next()` / iteration yield documents; with repeat=True the shards are read again and again
    (epoch counts passes). state_dict() after k documents, loaded into a fresh reader, makes it
    yield document k+1 onwards. A pass over all shards that finds no document is an error.
    """

    def __init__(self, spec: TextSpec, repeat: bool = False, rank: int = 0, world_size: int = 1) -> None:
        """rank / world_size: data-parallel ranks read disjoint shards (every world_size-th one),
        so together they see each document once per epoch."""
        self.spec, self.repeat = spec, repeat
        shards = expand_shards(spec.paths, what="text file")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if len(shards) < world_size:
            raise ValueError(f"{len(shards)} text file(s) cannot be split over {world_size} ranks: "
                             f"give at least one shard per rank")
        self.shards = shards[rank::world_size]
        self.formats = [_format_of(p, spec.format) for p in self.shards]
        self.shard, self.offset, self.epoch = 0, 0, 0
        self._docs: Iterator[str] | None = None

    def _fingerprint(self) -> str:
        names = "\n".join(os.path.basename(p) for p in self.shards)
        return hashlib.blake2b(names.encode(), digest_size=8).hexdigest()

    def _generate(self) -> Iterator[str]:
        while True:
            from_start, found = self.shard == 0 and self.offset == 0, False
            while self.shard < len(self.shards):
                path = self.shards[self.shard]
                for text, self.offset in _READERS[self.formats[self.shard]](path, self.spec, self.offset):
                    found = True
                    yield text
                self.shard, self.offset = self.shard + 1, 0
            if from_start and not found:
                raise ValueError(f"no documents in {len(self.shards)} text file(s): {', '.join(self.shards[:3])}"
                                 f"{' ...' if len(self.shards) > 3 else ''}")
            if not self.repeat:
                return
            self.shard, self.offset, self.epoch = 0, 0, self.epoch + 1

    def __iter__(self) -> "TextReader":
        return self

    def __next__(self) -> str:
        if self._docs is None:
            self._docs = self._generate()
        return next(self._docs)

    def next(self) -> str:
        return self.__next__()

    def state_dict(self) -> dict:
        return {"shard": self.shard, "offset": self.offset, "epoch": self.epoch,
                "num_shards": len(self.shards), "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        if state["num_shards"] != len(self.shards) or state["fingerprint"] != self._fingerprint():
            raise ValueError(f"saved text position is for another file list ({state['num_shards']} shard(s)); "
                             f"this reader has {len(self.shards)}: the file list changed")
        self.shard, self.offset, self.epoch = state["shard"], state["offset"], state["epoch"]
        self._docs = None


def iter_documents(spec: TextSpec) -> Iterator[str]:
    """One pass over the documents of a TextSpec, streamed."""
    return iter(TextReader(spec))
