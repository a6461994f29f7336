"""Offline text corpora and the train/held-out split (data/corpora.py).

The real corpora come from Debian packages and are skipped, with the package named, where they
are absent. Everything else runs on small files written here, in the corpora's own formats.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import re

import pytest

from data import corpora
from data.corpora import (CORPORA, CorpusMissing, get_corpus, prepared_paths, split_documents, split_of,
                          write_corpus_text)
from data.text_readers import TextSpec, iter_documents

# ---------------------------------------------------------------- the installed corpora


def _installed(name: str):
    spec = get_corpus(name)
    if not spec.available():
        pytest.skip(f"corpus {name!r} needs the Debian package {spec.debian_package} "
                    f"(apt-get install {spec.debian_package}); not found at {', '.join(spec.paths)}")
    return spec


@pytest.fixture(params=sorted(CORPORA))
def installed_corpus(request):
    return _installed(request.param)


def test_installed_corpus_is_english_prose(installed_corpus):
    docs = list(itertools.islice(installed_corpus.documents(), 3000))
    assert len(docs) == 3000
    joined = " ".join(docs)
    words = re.findall(r"[a-z]+", joined.lower())
    assert len(words) > 30000
    assert sum(w in {"the", "of", "a", "to", "or", "and", "in"} for w in words) / len(words) > 0.05
    assert sum(ch.isascii() for ch in joined) / len(joined) > 0.99
    assert all(d.strip() for d in docs)


def test_gcide_markup_is_gone():
    docs = list(itertools.islice(_installed("gcide").documents(), 5000))
    joined = "\n".join(docs)
    for markup in ("\\", "[1913 Webster]", "[WordNet 1.5]", "{", "}", "[a^]", "[=e]", "00-database"):
        assert markup not in joined, markup
    abandon = next(d for d in docs if d.startswith("Abandon, v. t."))
    assert "To give up absolutely" in abandon


def test_wordnet_groups_synsets():
    docs = list(itertools.islice(_installed("wordnet").documents(), 50))
    assert docs[0].startswith("entity (noun): that which is perceived or known")
    assert all(1 <= d.count("\n") + 1 <= corpora.SYNSETS_PER_DOC for d in docs)
    assert "_" not in docs[0]


# ---------------------------------------------------------------- corpus formats on small files

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n: int) -> str:
    out = ""
    while True:
        out = _B64[n % 64] + out
        n //= 64
        if n == 0:
            return out


def _write_dictd(tmp_path, chunks: dict[str, str]):
    """A dictd pair (gzip .dict.dz + base64 .index) with one chunk per headword."""
    body, index = b"", []
    for word, chunk in chunks.items():
        raw = chunk.encode()
        index.append(f"{word}\t{_b64(len(body))}\t{_b64(len(raw))}\n")
        body += raw + b"\n"
    dict_path, index_path = tmp_path / "x.dict.dz", tmp_path / "x.index"
    dict_path.write_bytes(gzip.compress(body))
    index_path.write_text("".join(sorted(index)))
    return str(dict_path), str(index_path)


def test_gcide_format(tmp_path):
    chunks = {
        "00-database-short": "00-database-short\n   Some dictionary\n",
        "Abjure": ('Abjure \\Ab*jure"\\ ([a^]b*j[=u]r"), v. t. [imp. & p. p.\n   {Ab*jured"}.] [L. abjurare.]\n'
                   '   1. To renounce upon oath; as, to abjure errors. [Obs.]\n      [1913 Webster]\n\n'
                   '   Syn: See {Renounce}.\n        [1913 Webster +PJC]\n'),
        "Cafe": "Cafe \\Ca`f['e]\"\\, n.\n   A coffee house; a caf['e] in C[ae]sar's town.\n   [WordNet 1.5]\n",
    }
    dict_path, index_path = _write_dictd(tmp_path, chunks)
    spec = dataclasses.replace(CORPORA["gcide"], paths=(dict_path, index_path))
    assert list(spec.documents()) == [
        "Abjure, v. t. [imp. & p. p. Abjured.] [L. abjurare.] 1. To renounce upon oath; as, to abjure errors. [Obs.]\n"
        "Syn: See Renounce.",
        "Cafe, n. A coffee house; a café in Cæsar's town.",
    ]


def test_a_gcide_index_that_is_not_utf8_names_the_file_line_and_fix(tmp_path):
    dict_path, index_path = _write_dictd(tmp_path, {"Cafe": "Cafe, n.\n   A coffee house.\n"})
    with open(index_path, "ab") as f:
        f.write(b"caf\xe9\tA\tB\n")  # a Latin-1 headword
    spec = dataclasses.replace(CORPORA["gcide"], paths=(dict_path, index_path))
    with pytest.raises(ValueError, match=rf"{re.escape(index_path)} line 2: byte 0xe9 at offset \d+ is not UTF-8: "
                                         r".*apt-get install --reinstall dict-gcide"):
        list(spec.documents())


def test_wordnet_format(tmp_path):
    licence = "  1 This software and database is being provided\n"
    lines = [f"{i:08d} {lex:02d} n 02 thing_{i} 0 item 1 000 | gloss {i}; \"example {i}\"  \n"
             for i, lex in enumerate([3] * 10 + [4] * 2)]
    (tmp_path / "data.noun").write_text(licence + "".join(lines))
    (tmp_path / "data.adj").write_text(licence + "00000001 00 s 01 big(a) 0 000 | large in size  \n")
    spec = dataclasses.replace(CORPORA["wordnet"], paths=(str(tmp_path / "data.noun"), str(tmp_path / "data.adj")))
    docs = list(spec.documents())
    # 10 synsets of lexicographer file 03 -> 8 + 2, file 04 -> 2, then the adjective file.
    assert [d.count("\n") + 1 for d in docs] == [8, 2, 2, 1]
    assert docs[0].split("\n")[0] == 'thing 0, item (noun): gloss 0; "example 0"'
    assert docs[-1] == "big (adjective): large in size"


def _write_fortunes(root, files: dict[str, str]):
    root.mkdir(exist_ok=True)
    for name, body in files.items():
        (root / name).write_text(body)
    return root


def test_fortunes_format(tmp_path):
    root = _write_fortunes(tmp_path / "f", {
        "wisdom": "First fortune,\n\tindented.\n%\nB\x08Bo\x08ol\x08ld second.   \n%\n%\n",
        "wisdom.dat": "binary index",
        "zen": "Last one.\n",
    })
    os.symlink(root / "wisdom", root / "wisdom.u8")
    (root / "off").mkdir()
    (root / "off" / "rude").write_text("skipped\n%\n")
    spec = dataclasses.replace(CORPORA["fortunes"], paths=(str(root),))
    assert list(spec.documents()) == ["First fortune,\n\tindented.", "Bold second.", "Last one."]


def test_missing_corpus_names_the_package(tmp_path):
    spec = dataclasses.replace(CORPORA["gcide"], paths=(str(tmp_path / "nope.dict.dz"), str(tmp_path / "nope.index")))
    with pytest.raises(CorpusMissing, match=r"apt-get install dict-gcide.*|nope\.dict\.dz") as err:
        list(spec.documents())
    assert "apt-get install dict-gcide" in str(err.value) and "nope.dict.dz" in str(err.value)
    with pytest.raises(ValueError, match="unknown text corpus 'c5'.*fortunes"):
        get_corpus("c5")


def test_empty_corpus_is_an_error(tmp_path):
    root = _write_fortunes(tmp_path / "f", {"empty": "", "blank": "%\n  \n%\n"})
    spec = dataclasses.replace(CORPORA["fortunes"], paths=(str(root),))
    with pytest.raises(ValueError, match="'fortunes'.*holds no documents"):
        list(spec.documents())


# ---------------------------------------------------------------- split

def test_split_is_disjoint_stable_and_sized():
    docs = [f"document number {i}" for i in range(20000)]
    train = list(split_documents(docs, "train", 0.02))
    held = list(split_documents(docs, "heldout", 0.02))
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(docs)
    assert 0.015 < len(held) / len(docs) < 0.025
    assert held == list(split_documents(docs, "heldout", 0.02))
    # Fixed values: the split must not change across machines, runs or Python versions.
    assert [split_of(s, 0.5) for s in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]] == \
        ["heldout", "heldout", "heldout", "heldout", "train", "heldout"]
    assert held != list(split_documents(docs, "heldout", 0.02, salt="another"))
    assert all(split_of(d, 0.0) == "train" for d in docs[:100])
    with pytest.raises(ValueError, match="unknown split"):
        list(split_documents(docs, "test"))


def test_write_corpus_text(tmp_path, monkeypatch):
    bodies = [f"Fortune {i}: {'words ' * (i % 7)}the end." for i in range(400)]
    root = _write_fortunes(tmp_path / "f", {"all": "\n%\n".join(bodies) + "\n"})
    monkeypatch.setitem(CORPORA, "fortunes", dataclasses.replace(CORPORA["fortunes"], paths=(str(root),)))
    monkeypatch.setitem(CORPORA, "gcide", dataclasses.replace(CORPORA["gcide"], paths=(str(tmp_path / "no"),) * 2))
    messages = []
    stats = write_corpus_text(tmp_path / "d", corpora=("fortunes", "gcide"), heldout_frac=0.1,
                              optional=("gcide",), progress=messages.append)
    assert "gcide" in stats["skipped"] and "apt-get install dict-gcide" in stats["skipped"]["gcide"]
    counts = stats["stats"]["fortunes"]
    assert counts["train"]["docs"] + counts["heldout"]["docs"] == 400 and counts["heldout"]["docs"] > 10
    train = list(iter_documents(TextSpec(prepared_paths(tmp_path / "d", "train"))))
    held = list(iter_documents(TextSpec(prepared_paths(tmp_path / "d", "heldout", ["fortunes"]))))
    assert sorted(train + held) == sorted(bodies) and set(train).isdisjoint(held)
    assert counts["train"]["chars"] == sum(map(len, train))
    assert any("fortunes" in m for m in messages)
    # A second call finds the manifest and rewrites nothing.
    path = tmp_path / "d" / "text" / "fortunes" / "train.jsonl"
    before = path.stat().st_mtime_ns
    again = write_corpus_text(tmp_path / "d", corpora=("fortunes", "gcide"), heldout_frac=0.1, optional=("gcide",))
    assert again == stats
    assert path.stat().st_mtime_ns == before
    with pytest.raises(CorpusMissing, match="apt-get install dict-gcide"):
        write_corpus_text(tmp_path / "e", corpora=("gcide",), optional=())
    with pytest.raises(FileNotFoundError, match="data.prepare"):
        prepared_paths(tmp_path / "e", "train")
