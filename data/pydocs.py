"""Fallback English text that every Python installation carries: its standard library's docs.

Where the Debian corpora (data/corpora.py) are missing -- a non-root user, macOS, a fresh
container -- `python -m data.prepare` builds from these instead, offline, in seconds. Sources are
parsed with `ast` (never imported) in sorted path order, so the text is the same on every machine
with the same Python version (distributions that split the standard library into several
packages may lack a few modules). Two corpora from distinct sources, one per held-out role:
  "pydoc"           -> wiki: what `help()` shows, i.e. reference text describing one thing each:
                       the language reference (pydoc_data/topics.py, one document per section)
                       and every module, class and function docstring (one document each)
  "stdlib-comments" -> c4: informal notes by many authors: each block of prose comments
Long texts are split into paragraph groups; test suites, third-party packages, doctest examples,
commented-out code and near-empty texts are left out.
"""

from __future__ import annotations

import ast
import functools
import itertools
import os
import re
import sysconfig
import textwrap
from typing import Iterable, Iterator

MAX_DOC_CHARS = 2000  # paragraphs are packed into documents up to this size
MIN_WORDS = 6  # shorter docstrings and comments ("Return self.", "XXX") are dropped
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_RULE = re.compile(r"^\s*([*=~^#+-])\1{2,}\s*$")  # heading underlines and separator lines
_PRAGMA = re.compile(r"^(!|\s*-\*-|\s*(noqa|type:|pragma|fmt:|pylint:))")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_WORD = re.compile(r"[(\"']?[A-Za-z][a-z']*[)\"']?[,.;:!?]?")


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def _paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs with whitespace normalised: prose becomes one line; a block
    with indented lines (code, option lists) keeps its lines, dedented. Heading underlines,
    separators and doctest examples (from their first ">>>" on) are dropped."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\x0c", "").expandtabs()):
        lines = [line.rstrip() for line in block.split("\n") if line.strip() and not _RULE.match(line)]
        lines = list(itertools.takewhile(lambda line: not line.lstrip().startswith(">>>"), lines))
        if not lines:
            continue
        if any(line[0] == " " for line in lines):
            out.append(textwrap.dedent("\n".join(lines)))
        else:
            out.append(" ".join(" ".join(lines).split()))
    return out


def _titled(title: str, text: str) -> list[str]:
    """A docstring's paragraphs, the first one headed by what it documents; [] if near-empty."""
    paras = _paragraphs(text)
    if sum(len(p.split()) for p in paras) < MIN_WORDS:
        return []
    return [f"{title}: {paras[0]}", *paras[1:]]


def _pack(paragraphs: Iterable[str]) -> Iterator[str]:
    """Consecutive paragraphs joined into documents of at most MAX_DOC_CHARS (a longer
    paragraph is a document of its own)."""
    doc, size = [], 0
    for p in paragraphs:
        if doc and size + len(p) > MAX_DOC_CHARS:
            yield "\n".join(doc)
            doc, size = [], 0
        doc.append(p)
        size += len(p) + 1
    if doc:
        yield "\n".join(doc)


def _definitions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every class and function, nested ones included (also those
    under if / try blocks)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{child.name}"
            yield name, child
            yield from _definitions(child, name)
        elif isinstance(child, ast.stmt):
            yield from _definitions(child, prefix)


def _comments(lines: list[str], in_string: set[int]) -> Iterator[list[str]]:
    """The prose paragraphs of each block of whole-line comments (a lone "#" separates
    paragraphs). Commented-out code (few plain words) and pragmas are skipped."""
    block, para = [], []
    for i, line in enumerate([*lines, ""], 1):
        s = line.strip()
        is_comment = s.startswith("#") and i not in in_string
        text = s.lstrip("#").strip() if is_comment else ""
        if text and not _PRAGMA.match(text) and not _RULE.match(s):
            para.append(text)
            continue
        words = " ".join(para).split()
        if len(words) >= MIN_WORDS and sum(bool(_WORD.fullmatch(w)) for w in words) >= 0.7 * len(words):
            block.append(" ".join(words))
        para = []
        if not is_comment and block:
            yield block
            block = []


@functools.lru_cache(maxsize=4)
def _stdlib_texts(root: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One pass over the sources under `root`: (docstring documents, comment documents)."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        paths += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames if f.endswith(".py")]
    docstrings, comments = [], []
    for rel in sorted(p.replace(os.sep, "/") for p in paths):
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            source = f.read()
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):  # a few data files in the library are not Python 3
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        documented = [(name, n, doc) for name, n in [(module, tree), *_definitions(tree, module)]
                      if (doc := ast.get_docstring(n))]
        for name, _, doc in documented:
            docstrings += _pack(_titled(name, doc))
        # Lines of docstrings are text, not comments, even when they start with "#" (a full walk
        # for every multi-line string would double the time and finds ~4 kB more).
        in_string = {i for _, n, _ in documented for i in range(n.body[0].lineno, n.body[0].end_lineno + 1)}
        for block in _comments(source.split("\n"), in_string):
            comments += _pack(block)
    return tuple(docstrings), tuple(comments)


def _topics(root: str) -> dict[str, str]:
    """pydoc_data/topics.py's `topics` dict (the language reference as text), read without
    importing it; {} where a distribution leaves it out."""
    path = os.path.join(root, "pydoc_data", "topics.py")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:  # not a plain literal in some future version: docstrings only
                return {}
    return {}


def pydoc_documents(spec) -> Iterator[str]:
    """The "pydoc" corpus of the standard library at spec.paths[0]: the reference topics, then
    the docstrings file by file."""
    root = spec.paths[0]
    for _, text in sorted(_topics(root).items()):
        yield from _pack(_paragraphs(text))
    yield from _stdlib_texts(root)[0]


def comment_documents(spec) -> Iterator[str]:
    """The "stdlib-comments" corpus: the prose comment blocks, file by file."""
    yield from _stdlib_texts(spec.paths[0])[1]
