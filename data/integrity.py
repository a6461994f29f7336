"""Cheap validity checks of prepared files, and one-line messages for files that fail them.

Every prepared file is written atomically (data/atomic.py), so a damaged one comes from outside:
a hand edit, a copy cut short, a failing disk. `damage(path)` says what is wrong, reading at most
the file once and parsing nothing large: JSON is parsed, JSONL is checked to be UTF-8 ending in
a newline, a torch file's zip directory, a numpy array's header and a safetensors header must
agree with the file's size.

    damage(Path("data_cache/images/shapes_train.pt"))   # None, or e.g. "not a torch file (...)"
    read_json(path, fix="delete it and rerun ...")  # the object, or ValueError in one line
    decode_utf8(raw, where, fix)                    # str, or ValueError naming the byte
"""

from __future__ import annotations

import codecs
import json
import struct
import zipfile
from pathlib import Path
from typing import Callable

_CHUNK = 1 << 20


def utf8_problem(exc: UnicodeDecodeError, base: int = 0) -> str:
    """"byte 0xe9 at offset N is not UTF-8" for a decode error of bytes starting at offset `base`."""
    bad = exc.object[exc.start:exc.start + 1]
    return f"byte 0x{bad.hex()} at offset {base + exc.start} is not UTF-8"


def decode_utf8(raw: bytes, where: str, fix: str, base: int = 0) -> str:
    """`raw` decoded, or ValueError: "<where>: byte 0x.. at offset N is not UTF-8: <fix>"."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: {utf8_problem(exc, base)}: {fix}") from None


def _json_problem(text: bytes) -> str | None:
    try:
        json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return utf8_problem(exc)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return None


def read_json(path: Path, fix: str):
    """The JSON in `path`; ValueError "<path> is corrupt (<what is wrong>): <fix>" when it is not
    UTF-8 JSON. A missing file raises FileNotFoundError as usual."""
    raw = Path(path).read_bytes()
    problem = _json_problem(raw)
    if problem:
        raise ValueError(f"{path} is corrupt ({problem}): {fix}")
    return json.loads(raw)


def _utf8_lines_problem(path: Path) -> str | None:
    decoder, offset, last = codecs.getincrementaldecoder("utf-8")(), 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:  # exc.start counts from the undecoded tail
                return utf8_problem(exc, offset - len(exc.object) + len(chunk))
            offset, last = offset + len(chunk), chunk[-1:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return f"its last character is cut short at offset {offset}"
    if offset == 0:
        return "empty"
    if last != b"\n":
        return "cut short: its last line has no newline"
    return None


def _torch_problem(path: Path) -> str | None:
    try:  # torch.save writes a zip archive; its directory sits at the end, so a cut file fails here
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"not a torch file ({exc})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = f.read(n) if 0 <= n <= size - 8 else b""
    problem = _json_problem(header) if header else "no header"
    if problem:
        return f"not a safetensors file ({problem})"
    try:
        end = 8 + n + max((t["data_offsets"][1] for k, t in json.loads(header).items() if k != "__metadata__"),
                          default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        return "not a safetensors file (its header lists no tensor offsets)"
    return None if end == size else f"cut short or padded: {size} bytes, its header describes {end}"


def _npy_problem(path: Path) -> str | None:
    """A numpy array file whose header does not parse, or whose size is not what it declares."""
    import numpy as np

    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except (ValueError, OSError, SyntaxError) as exc:
            return f"not a numpy array file ({exc})"
        expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    return None if size == expected else f"cut short: {size} bytes, its header declares {expected}"


_CHECKS: dict[str, Callable[[Path], str | None]] = {
    ".npy": _npy_problem,
    ".json": lambda p: _json_problem(p.read_bytes()),
    ".jsonl": _utf8_lines_problem,
    ".pt": _torch_problem,
    ".safetensors": _safetensors_problem,
}


def _dir_problem(path: Path) -> str | None:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        return "empty"
    for p in files:
        if why := damage(p):
            return f"{p.relative_to(path)}: {why}"
    return None


def damage(path: Path, load: Callable[[Path], object] | None = None) -> str | None:
    """None when `path` looks whole; else what is wrong ("missing", "empty", "not JSON: ...").
    A directory is checked file by file. `load`, when given, must also accept the path (the
    message of its exception's cause, or else of the exception, becomes the answer)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        problem = _dir_problem(path)
    elif path.stat().st_size == 0:
        problem = "empty"
    else:
        problem = _CHECKS.get(path.suffix, lambda p: None)(path)
    if problem is None and load is not None:
        try:
            load(path)
        except Exception as exc:  # any failure to load is damage, whatever the library raises
            problem = str(exc.__cause__ or exc)
    return problem
