"""Shard sets: the one on-disk format the training stream reads, for the embedded default and
for a cluster's own data alike (data.prepare writes it for the embedded default; data/stream.py
reads it).

A shard set is a directory of numpy arrays, memory-mapped when read, so that a process touches
only the pages of the items it reads and no file is ever loaded whole:

    <set>/index.json                the kind, the shards in order, the settings that built them
    <set>/<stem>.json               one shard's record, written after its arrays (its checksums)
    text:    <stem>.tokens.npy      int32 [T]    every document's ids, end to end
             <stem>.offsets.npy     int64 [n+1]  document i = tokens[offsets[i]:offsets[i+1]]
    images:  <stem>.latents.npy     float16/float32 [n, C, h, w]   (kind "latents", Transfusion)
             <stem>.codes.npy       int16/int32 [n, h, w]          (kind "codes", Chameleon)
             <stem>.caption_tokens.npy   int32 [T]     the captions, tokenized
             <stem>.caption_offsets.npy  int64 [m+1]   caption j = caption_tokens[o[j]:o[j+1]]
             <stem>.caption_index.npy    int64 [n+1]   image i's captions: j in [ci[i], ci[i+1])

Captions are stored tokenized: the tokenizer is part of what the set is (its checksum sits in
index.json's meta), and a training step then never runs a tokenizer. A shard's record is
written last, so a shard with a record is whole; writers that run in parallel (one task per
shard range) each write their own records, and `write_index` gathers them once all exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from data.atomic import file_sha256, write_text_atomic

INDEX = "index.json"
KINDS = ("text", "latents", "codes")
ARRAYS = {
    "text": ("tokens", "offsets"),
    "latents": ("latents", "caption_tokens", "caption_offsets", "caption_index"),
    "codes": ("codes", "caption_tokens", "caption_offsets", "caption_index"),
}


class ShardError(ValueError):
    """A shard set that is missing, incomplete or damaged; the message names the file and the fix."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_shard(directory: str | Path, stem: str, kind: str, arrays: dict[str, np.ndarray]) -> dict:
    """Write one shard's arrays, then its record (count, elements, sha256 of every file) -> the
    record. `arrays` holds exactly ARRAYS[kind]."""
    if kind not in KINDS:
        raise ValueError(f"unknown shard kind {kind!r}; valid: {', '.join(KINDS)}")
    if set(arrays) != set(ARRAYS[kind]):
        raise ValueError(f"a {kind} shard holds {', '.join(ARRAYS[kind])}, not {', '.join(sorted(arrays))}")
    _check_arrays(kind, arrays, stem)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ARRAYS[kind]:
        path = directory / f"{stem}.{name}.npy"
        _save_npy(path, arrays[name])
        files[name] = file_sha256(path)
    first = arrays[ARRAYS[kind][0]]
    count = len(arrays["offsets"]) - 1 if kind == "text" else int(first.shape[0])
    record = {"stem": stem, "kind": kind, "count": count, "files": files,
              "tokens": int(arrays["tokens"].shape[0]) if kind == "text" else int(arrays["caption_tokens"].shape[0])}
    if kind != "text":
        record["item_shape"] = list(first.shape[1:])
        record["dtype"] = str(first.dtype)
    write_text_atomic(directory / f"{stem}.json", json.dumps(record, indent=1))
    return record


def _check_arrays(kind: str, a: dict[str, np.ndarray], stem: str) -> None:
    """The arrays hang together: offsets rise from 0 to the token count, one caption list per image."""
    def rising(offsets: np.ndarray, end: int, what: str) -> None:
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != end or (np.diff(offsets) < 0).any():
            raise ValueError(f"shard {stem}: {what} do not rise from 0 to {end}")

    if kind == "text":
        rising(a["offsets"], len(a["tokens"]), "document offsets")
        return
    n = a[ARRAYS[kind][0]].shape[0]
    rising(a["caption_offsets"], len(a["caption_tokens"]), "caption offsets")
    rising(a["caption_index"], len(a["caption_offsets"]) - 1, "caption index")
    if len(a["caption_index"]) != n + 1:
        raise ValueError(f"shard {stem}: {n} images but {len(a['caption_index']) - 1} caption lists")


def caption_arrays(captions: list[list[list[int]]]) -> dict[str, np.ndarray]:
    """Tokenized captions, a list of caption id lists per image -> the three caption arrays of
    an image shard (caption_tokens, caption_offsets, caption_index)."""
    flat = [ids for per_image in captions for ids in per_image]
    lengths = np.fromiter((len(ids) for ids in flat), dtype=np.int64, count=len(flat))
    per_image = np.fromiter((len(c) for c in captions), dtype=np.int64, count=len(captions))
    tokens = np.fromiter((t for ids in flat for t in ids), dtype=np.int32, count=int(lengths.sum()))
    return {"caption_tokens": tokens,
            "caption_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "caption_index": np.concatenate([[0], np.cumsum(per_image)]).astype(np.int64)}


def shard_record(directory: str | Path, stem: str) -> dict | None:
    """A shard's record where it was written whole (its arrays exist), else None: the shard is to do."""
    path = Path(directory) / f"{stem}.json"
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if all((Path(directory) / f"{stem}.{name}.npy").exists() for name in record.get("files", {})):
        return record
    return None


def write_index(directory: str | Path, stems: list[str], meta: dict) -> dict:
    """index.json for the shards `stems` (in this order), each of which must have its record."""
    directory = Path(directory)
    records = []
    for stem in stems:
        record = shard_record(directory, stem)
        if record is None:
            raise ShardError(f"{directory}: shard {stem} is not written whole; write it before the index")
        records.append(record)
    kinds = {r["kind"] for r in records}
    if len(kinds) != 1:
        raise ShardError(f"{directory}: shards of kinds {sorted(kinds)} cannot form one set")
    shapes = {(tuple(r.get("item_shape", ())), r.get("dtype")) for r in records}
    if len(shapes) != 1:
        raise ShardError(f"{directory}: shards of different item shapes or dtypes {sorted(shapes)} cannot form one set")
    index = {"kind": kinds.pop(), "count": sum(r["count"] for r in records),
             "tokens": sum(r["tokens"] for r in records), "shards": records, "meta": meta}
    write_text_atomic(directory / INDEX, json.dumps(index, indent=1))
    return index


@dataclass
class TextShard:
    """One text shard, memory-mapped: documents as int32 arrays."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


@dataclass
class ImageShard:
    """One image shard, memory-mapped: an image's latents or codes and its tokenized captions."""

    images: np.ndarray
    caption_tokens: np.ndarray
    caption_offsets: np.ndarray
    caption_index: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]

    def item(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        o = self.caption_offsets
        captions = [self.caption_tokens[o[j]:o[j + 1]] for j in range(self.caption_index[i], self.caption_index[i + 1])]
        return self.images[i], captions


class ShardSet:
    """Read access to one shard set. Opening reads index.json only; a shard's files are mapped
    when first used. `verify()` re-reads every file against its checksum (data.integrity)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / INDEX
        try:
            self.index = json.loads(path.read_text())
        except FileNotFoundError:
            raise ShardError(f"{path} is missing: the shard set was never finished; rerun the command that "
                             "writes it (python -m data.prepare for the embedded data)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShardError(f"{path} is damaged ({exc}): delete it and rerun the command that wrote it") from None
        self.kind = self.index["kind"]
        self.records = self.index["shards"]
        self._open: dict[int, TextShard | ImageShard] = {}

    @property
    def meta(self) -> dict:
        return self.index.get("meta", {})

    @cached_property
    def sizes(self) -> list[int]:
        return [r["count"] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def shard(self, i: int) -> TextShard | ImageShard:
        if i not in self._open:
            stem = self.records[i]["stem"]
            arrays = [self._map(stem, name) for name in ARRAYS[self.kind]]
            if self.kind == "text":
                self._open[i] = TextShard(arrays[0], np.asarray(arrays[1]))
            else:
                images, tokens, offsets, index = arrays
                self._open[i] = ImageShard(images, tokens, np.asarray(offsets), np.asarray(index))
            if len(self._open[i]) != self.records[i]["count"]:
                raise ShardError(f"{self.directory}/{stem}: {len(self._open[i])} items, the index says "
                                 f"{self.records[i]['count']}: delete the shard and rerun the command that wrote it")
        return self._open[i]

    def _map(self, stem: str, name: str) -> np.ndarray:
        path = self.directory / f"{stem}.{name}.npy"
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise ShardError(f"{path} is missing: rerun the command that wrote {self.directory}") from None
        except (ValueError, OSError) as exc:  # truncated or not an array file
            raise ShardError(f"{path} is unreadable ({exc}): delete it and its {stem}.json, and rerun the "
                             "command that wrote it") from None

    def documents(self):
        """Every text document in file order (shard by shard, as the index lists them)."""
        for i in range(len(self)):
            shard = self.shard(i)
            for j in range(len(shard)):
                yield shard.doc(j)

    def verify(self) -> str | None:
        """The first file whose bytes differ from the checksum its record holds, or None."""
        for record in self.records:
            for name, digest in record["files"].items():
                path = self.directory / f"{record['stem']}.{name}.npy"
                if not path.exists() or file_sha256(path) != digest:
                    return str(path)
        return None
