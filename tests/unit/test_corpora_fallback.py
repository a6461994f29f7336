"""The fallback corpora built from the Python standard library (data/pydocs.py), and prepare's
automatic choice between them and the Debian corpora (data/corpora.py: choose_corpora).

They need nothing but Python, so unlike tests/unit/test_corpora.py nothing here is skipped.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from data import pydocs
from data.corpora import (CORPORA, DEFAULT_CORPORA, FALLBACK_CORPORA, CorpusMissing, choose_corpora, get_corpus,
                          roles_for, split_documents)
from data.embedded import EmbeddedData
from data.prepare import Prepare, PrepareConfig, main


def _missing(monkeypatch, tmp_path, name: str) -> None:
    """Make a Debian corpus look uninstalled."""
    monkeypatch.setitem(CORPORA, name, dataclasses.replace(CORPORA[name], paths=(str(tmp_path / "absent"),)))


def _present(monkeypatch, tmp_path, name: str) -> None:
    """Make a Debian corpus look installed (only its paths are looked at)."""
    (tmp_path / "present").touch()
    monkeypatch.setitem(CORPORA, name, dataclasses.replace(CORPORA[name], paths=(str(tmp_path / "present"),)))


@pytest.mark.parametrize("name", FALLBACK_CORPORA)
def test_fallback_corpus_yields_clean_documents(name):
    spec = get_corpus(name)
    assert spec.available() and spec.debian_package == "" and "Python" in spec.source
    docs = list(spec.documents())
    assert len(docs) > 3000 and sum(map(len, docs)) > 500_000
    assert all(d == d.strip() and len(d.split()) >= pydocs.MIN_WORDS for d in docs)
    assert all("\n\n" not in d and "  \n" not in d and ">>>" not in d.split("\n")[0] for d in docs)
    assert max(map(len, docs)) < 4 * pydocs.MAX_DOC_CHARS
    assert docs == list(spec.documents())  # repeatable; the sorted file order is checked below


def test_fallback_split_is_disjoint_and_stable():
    for name in FALLBACK_CORPORA:
        docs = list(get_corpus(name).documents())
        train, held = list(split_documents(docs, "train")), list(split_documents(docs, "heldout"))
        assert len(train) + len(held) == len(docs) and set(train).isdisjoint(held)
        assert 0.01 < len(held) / len(docs) < 0.03
        assert held == list(split_documents(list(get_corpus(name).documents()), "heldout"))


def test_fake_stdlib_in_sorted_order(tmp_path):
    """On a small standard library written here: what goes where, and what is left out."""
    (tmp_path / "pydoc_data").mkdir()
    (tmp_path / "pydoc_data" / "topics.py").write_text(
        "topics = {'while': 'The \"while\" statement\\n***********\\n\\nThe while statement is used for\\n"
        "repeated execution.\\n\\n   while_stmt ::= \"while\" expression\\n'}\n")
    for skipped in ("test", "site-packages"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text('"""Never read: tests and third-party packages are left out."""\n')
    (tmp_path / "zeta.py").write_text('"""The zeta module computes many useful things."""\n')
    (tmp_path / "bad.py").write_text("print 'python 2'\n")
    (tmp_path / "alpha.py").write_text(
        '"""Alpha: a module with a docstring that is long enough to keep."""\n'
        "# This comment explains, in plain words, why the next line\n#   is written as it is.\n#\n"
        "# A second paragraph of the same block of comments.\nX = 1  # trailing comments are not read\n"
        "# x = compute(a[0], b[1]) + 2\n# noqa: E501\n"
        "class Thing:\n    '''Short.'''\n    def run(self):\n"
        "        '''Run the thing until it stops by itself.\n\n        >>> Thing().run()\n'''\n")
    spec = dataclasses.replace(CORPORA["pydoc"], paths=(str(tmp_path),))
    assert list(spec.documents()) == [
        'The "while" statement\nThe while statement is used for repeated execution.\nwhile_stmt ::= "while" expression',
        "alpha: Alpha: a module with a docstring that is long enough to keep.",
        "alpha.Thing.run: Run the thing until it stops by itself.",
        "zeta: The zeta module computes many useful things.",
    ]
    comments = dataclasses.replace(CORPORA["stdlib-comments"], paths=(str(tmp_path),))
    assert list(comments.documents()) == [
        "This comment explains, in plain words, why the next line is written as it is.\n"
        "A second paragraph of the same block of comments."]


def test_roles_and_choice(monkeypatch, tmp_path):
    assert roles_for(DEFAULT_CORPORA) == {"c4": "gcide", "wiki": "wordnet"}
    assert roles_for(FALLBACK_CORPORA) == {"c4": "stdlib-comments", "wiki": "pydoc"}
    assert roles_for(("wordnet", "fortunes")) == {"wiki": "wordnet"}
    for name in DEFAULT_CORPORA:
        _present(monkeypatch, tmp_path, name)
    said: list[str] = []
    assert choose_corpora(said.append) == DEFAULT_CORPORA and said == []
    _missing(monkeypatch, tmp_path, "fortunes")  # optional: skipped as before, no fallback
    assert choose_corpora(said.append) == DEFAULT_CORPORA and said == []
    _missing(monkeypatch, tmp_path, "gcide")
    assert choose_corpora(said.append) == FALLBACK_CORPORA
    assert len(said) == 1 and "dict-gcide not installed" in said[0] and "wordnet-base" not in said[0].split(",")[0]
    assert "apt-get install dict-gcide wordnet-base fortunes" in said[0]


def test_explicit_corpora_are_respected(monkeypatch, tmp_path, capsys):
    _missing(monkeypatch, tmp_path, "gcide")
    with pytest.raises(CorpusMissing, match="apt-get install dict-gcide"):
        Prepare(tmp_path / "d", PrepareConfig(corpora=("gcide", "pydoc")), log=lambda m: None).run()
    assert main(["--data-dir", str(tmp_path / "e"), "--corpora", "gcide"]) == 2
    assert "apt-get install dict-gcide" in capsys.readouterr().err


def test_tiny_prepare_falls_back_offline(monkeypatch, tmp_path, tiny_prepare):
    """With a Debian corpus missing, prepare says so once and builds both held-out roles from the
    fallback, end to end."""
    _missing(monkeypatch, tmp_path, "wordnet")
    lines: list[str] = []
    cfg = PrepareConfig(**{**tiny_prepare.__dict__, "corpora": ()})
    Prepare(tmp_path / "d", cfg, log=lines.append).run()
    notes = [line for line in lines if "fallback" in line]
    assert len(notes) == 1 and "wordnet-base" in notes[0]
    manifest = json.loads((tmp_path / "d" / "text" / "manifest.json").read_text())
    assert list(manifest["stats"]) == list(FALLBACK_CORPORA)
    assert manifest["roles"] == {"c4": "stdlib-comments", "wiki": "pydoc"}
    data = EmbeddedData(tmp_path / "d")
    for role in ("c4", "wiki"):
        assert data.text_documents(f"heldout_{role}").next().numel() > 0
    assert data.text_documents("train").next().numel() > 0
