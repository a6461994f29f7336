"""Offline English text corpora and a stable train/held-out split of their documents.

Two roles from the paper's text evaluation (sec 4.1: held-out perplexity on C4 and Wikipedia)
are played offline by Debian-packaged corpora (DESIGN.md, "Offline facts"):
  "c4"   -> gcide    (Webster 1913 via dict-gcide: one document per headword, ~126k entries)
  "wiki" -> wordnet  (WordNet glosses and examples via wordnet-base: groups of synsets)
fortunes (Debian fortunes) is extra training text only.
Where gcide or wordnet is missing (non-root user, macOS, a fresh container), `choose_corpora`
falls back to two corpora every Python installation carries (data/pydocs.py):
  "c4"   -> stdlib-comments  (the prose comment blocks of the Python standard library)
  "wiki" -> pydoc            (its language reference in pydoc_data and its docstrings)

Documents go to train or held-out by a salted hash of their text, so the split is disjoint
(duplicates land on the same side), needs no index and is the same on every machine.
`write_corpus_text` materialises the splits as JSONL under a data dir (python -m data.prepare);
data/text_readers.py streams them back.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import platform
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from data.atomic import open_atomic, write_text_atomic
from data.integrity import damage, decode_utf8
from data import pydocs

# --------------------------------------------------------------------------- embedded corpora


class CorpusMissing(FileNotFoundError):
    """An embedded corpus's files are not installed."""


@dataclass(frozen=True)
class CorpusSpec:
    """An offline corpus: its files (the first entry of `paths` may be a directory), the Debian
    package that installs them ("" for text that ships with Python, described by `source`), and
    the parser that turns them into documents."""

    name: str
    paths: tuple[str, ...]
    debian_package: str
    parse: Callable[["CorpusSpec"], Iterator[str]] = field(compare=False, repr=False, default=None)
    source: str = ""

    def check(self) -> None:
        """Raise CorpusMissing naming the package and the path looked at."""
        for p in self.paths:
            if not os.path.exists(p):
                how = (f"install the Debian package with `apt-get install {self.debian_package}`"
                       if self.debian_package else f"it should ship with Python ({self.source})")
                raise CorpusMissing(f"text corpus {self.name!r} needs {p}, which does not exist: {how} "
                                    f"(or pass other paths)")

    def available(self) -> bool:
        return all(os.path.exists(p) for p in self.paths)

    def documents(self) -> Iterator[str]:
        """All documents in file order. Raises CorpusMissing, or ValueError if there are none."""
        self.check()
        n = 0
        for doc in self.parse(self):
            n += 1
            yield doc
        if n == 0:
            raise ValueError(f"text corpus {self.name!r} at {', '.join(self.paths)} holds no documents")


# --- gcide: dictd format. The .index lists "headword<TAB>offset<TAB>length" with numbers in
# dictd's base64; each distinct (offset, length) is one chunk of the decompressed .dict holding
# every entry of one headword. Chunks are read in offset order, so the gzip stream only seeks
# forward (never loaded whole).
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

# Webster's character codes -> Unicode (accents combine with the letter that follows/precedes).
_LIGATURES = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ",
              "ng": "ŋ", "deg": "°", "sect": "§", "root": "√", "imac": "ī", "aum": "ä", "th": "þ"}
_ACCENT_BEFORE = {"'": "\u0301", "`": "\u0300", "=": "\u0304", "~": "\u0303", '"': "\u0308",
                  ".": "\u0307", "-": "\u0304", "^": "\u0302", ",": "\u0327", "*": "\u030a"}
_CODE = re.compile(r"\[([A-Za-z]{2,5}|['`=~\".\-^,*][A-Za-z]{1,2}|[A-Za-z]{1,2}\^)\]")
# Source attributions such as [1913 Webster], [WordNet 1.5 +PJC], [RDH].
_SOURCE = re.compile(r"\[(?:\s*\+?\s*(?:1913 Webster|Webster 1913 Suppl\.|Webster 1913|WordNet(?: \d\.\d| sense \d+)?"
                     r"|Century Dict\. 1906|PJC\.?|[A-Z]{2,3}|break))+\s*\]")
# The syllabified headword \Ab*jure"\ and a pronunciation in parentheses right after it.
_PRONUNCIATION = re.compile(r"\\[^\\]*\\(\s*\((?=[^()]*[\[*\"?`])[^()]*\))?")
# Other pronunciations, e.g. "Abandoned (-d[u^]nd)": no spaces, at least one accented letter code.
_PAREN_PRONUNCIATION = re.compile(r"\s*\((?=[^()\s]*\[(?:[A-Za-z]{1,2}\^|['`=~\".\-^][A-Za-z]{1,2})\])[^()\s]*\)")
_SYLLABLE_MARK = re.compile(r"(?<=[A-Za-z])[*\"`](?=[A-Za-z])")


def _dict_b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def _char_code(m: re.Match) -> str:
    code = m.group(1)
    if code in _LIGATURES:
        return _LIGATURES[code]
    if code[0] in _ACCENT_BEFORE:
        return unicodedata.normalize("NFC", code[1] + _ACCENT_BEFORE[code[0]] + code[2:])
    if code.endswith("^"):  # [a^] = breve
        return unicodedata.normalize("NFC", code[:-1] + "\u0306")
    return m.group(0)  # a word in brackets such as [Obs.] stays


def _unbrace(m: re.Match) -> str:
    """{Ab*jured"} -> Abjured: a syllabified word loses all its marks; other text is kept."""
    inner = m.group(1)
    return re.sub(r"[*\"`]", "", inner) if _SYLLABLE_MARK.search(inner) else inner


def clean_gcide(chunk: str) -> str:
    """Webster markup -> plain text: drop pronunciations and source tags, resolve character
    codes, unbrace cross references, and join each blank-line-separated block into one line."""
    text = _PAREN_PRONUNCIATION.sub("", _PRONUNCIATION.sub("", chunk))
    text = _CODE.sub(_char_code, text)
    text = _SOURCE.sub("", text)
    text = re.sub(r"\{([^{}]*)\}", _unbrace, text).replace("{", "").replace("}", "")  # some are unbalanced
    blocks = (" ".join(block.split()) for block in re.split(r"\n\s*\n", text))
    text = "\n".join(b for b in blocks if b)
    return re.sub(r" +([,;.])", r"\1", text)


def _gcide_documents(spec: CorpusSpec) -> Iterator[str]:
    dict_path, index_path = spec.paths
    chunks, at = set(), 0
    fix = f"the file is damaged: reinstall it with `apt-get install --reinstall {spec.debian_package}`"
    with open(index_path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = decode_utf8(raw, f"{index_path} line {n}", fix, base=at)
            at += len(raw)
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and not parts[0].startswith("00-"):  # 00-database-*: metadata
                try:
                    chunks.add((_dict_b64(parts[1]), _dict_b64(parts[2])))
                except KeyError:
                    raise ValueError(f"{index_path} line {n}: {parts[1]!r} / {parts[2]!r} are not dictd "
                                     f"offsets: {fix}") from None
    with gzip.open(dict_path, "rb") as f:
        for offset, length in sorted(chunks):
            f.seek(offset)
            raw = f.read(length)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # a handful of entries are in Windows-1252
                text = raw.decode("cp1252", errors="replace")
            doc = clean_gcide(text)
            if doc:
                yield doc


# --- wordnet: data.<pos> lines "offset lexfile pos n_words(hex) word lex_id ... | gloss";
# licence lines start with two spaces. Synsets come grouped by lexicographer file (noun.animal,
# ...), so a document is up to SYNSETS_PER_DOC consecutive synsets of one file: related topics.
SYNSETS_PER_DOC = 8
_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def _synset_line(line: str) -> tuple[str, str] | None:
    head, sep, gloss = line.partition(" | ")
    fields = head.split()
    if not sep or len(fields) < 4:
        return None
    n_words = int(fields[3], 16)
    words = [re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2]]
    return fields[1], f"{', '.join(words)} ({_POS.get(fields[2], fields[2])}): {gloss.strip()}"


def _wordnet_documents(spec: CorpusSpec) -> Iterator[str]:
    for path in spec.paths:
        group, group_file = [], None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or not (parsed := _synset_line(line)):
                    continue
                lexfile, text = parsed
                if group and (lexfile != group_file or len(group) == SYNSETS_PER_DOC):
                    yield "\n".join(group)
                    group = []
                group.append(text)
                group_file = lexfile
        if group:
            yield "\n".join(group)


# --- fortunes: plain files of fortunes separated by lines holding only "%". The .dat files are
# strfile indexes, .u8 are links to the same text; offensive ones (an "off" directory) are skipped.
def _fortunes_documents(spec: CorpusSpec) -> Iterator[str]:
    root = Path(spec.paths[0])
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
    for path in files:
        doc: list[str] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in itertools.chain(f, ["%\n"]):
                if line.rstrip("\r\n") == "%":
                    text = "\n".join(doc).strip("\n")
                    if text.strip():
                        yield text
                    doc = []
                else:
                    doc.append(re.sub(".\x08", "", line).rstrip())  # overstrike (bold) -> plain


CORPORA: dict[str, CorpusSpec] = {
    "gcide": CorpusSpec("gcide", ("/usr/share/dictd/gcide.dict.dz", "/usr/share/dictd/gcide.index"),
                        "dict-gcide", _gcide_documents),
    "wordnet": CorpusSpec("wordnet", tuple(f"/usr/share/wordnet/data.{p}" for p in ("noun", "verb", "adj", "adv")),
                          "wordnet-base", _wordnet_documents),
    "fortunes": CorpusSpec("fortunes", ("/usr/share/games/fortunes",), "fortunes", _fortunes_documents),
    "stdlib-comments": CorpusSpec("stdlib-comments", (pydocs.stdlib_root(),), "", pydocs.comment_documents,
                                  f"comments of the Python {platform.python_version()} standard library"),
    "pydoc": CorpusSpec("pydoc", (pydocs.stdlib_root(),), "", pydocs.pydoc_documents,
                        f"docstrings and pydoc_data of the Python {platform.python_version()} standard library"),
}
ROLES = {"c4": "gcide", "wiki": "wordnet"}  # paper's held-out perplexity sets -> offline stand-ins
FALLBACK_ROLES = {"c4": "stdlib-comments", "wiki": "pydoc"}  # where the Debian ones are missing
DEFAULT_CORPORA = ("gcide", "wordnet", "fortunes")
FALLBACK_CORPORA = ("stdlib-comments", "pydoc")
OPTIONAL_CORPORA = ("fortunes",)  # skipped with a note when absent; the role corpora are required


def get_corpus(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; valid: {sorted(CORPORA)}")
    return CORPORA[name]


def roles_for(corpora) -> dict[str, str]:
    """role -> the corpus among `corpora` that plays it (the Debian stand-in before the fallback);
    roles no corpus plays are left out."""
    roles = {}
    for role in ROLES:
        playing = [c for c in (ROLES[role], FALLBACK_ROLES[role]) if c in corpora]
        if playing:
            roles[role] = playing[0]
    return roles


def choose_corpora(say: Callable[[str], None] = print) -> tuple[str, ...]:
    """The Debian corpora where the role ones are installed (a missing fortunes is skipped, as
    before); otherwise the fallback, saying in one line which package is missing."""
    missing = [get_corpus(n) for n in DEFAULT_CORPORA if n not in OPTIONAL_CORPORA and not get_corpus(n).available()]
    if not missing:
        return DEFAULT_CORPORA
    packages = " ".join(CORPORA[n].debian_package for n in DEFAULT_CORPORA)
    say(f"text: {', '.join(s.debian_package for s in missing)} not installed, so the fallback corpora "
        f"{', '.join(FALLBACK_CORPORA)} (text of the Python {platform.python_version()} standard library) "
        f"are used instead; for the default ones: sudo apt-get install {packages}")
    return FALLBACK_CORPORA


# --------------------------------------------------------------------------- split

SPLIT_SALT = "transfusion-text-split-v1"
SPLITS = ("train", "heldout")


def split_of(text: str, heldout_frac: float = 0.02, salt: str = SPLIT_SALT) -> str:
    """"heldout" for a stable pseudo-random `heldout_frac` of texts, "train" otherwise."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=salt.encode("utf-8")[:64]).digest()
    return "heldout" if int.from_bytes(digest, "big") < heldout_frac * 2.0 ** 64 else "train"


def split_documents(docs, split: str, heldout_frac: float = 0.02, salt: str = SPLIT_SALT) -> Iterator[str]:
    """The documents of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    return (d for d in docs if split_of(d, heldout_frac, salt) == split)


# --------------------------------------------------------------------------- materialise

TEXT_VERSION = 1  # bump when parsing or cleaning changes, so prepared text is rebuilt


def write_corpus_text(data_dir: str | Path, corpora=DEFAULT_CORPORA, heldout_frac: float = 0.02,
                      salt: str = SPLIT_SALT, optional=OPTIONAL_CORPORA,
                      progress: Callable[[str], None] | None = None) -> dict:
    """Write each corpus's splits to <data_dir>/text/<name>/{train,heldout}.jsonl ({"text": ...}
    per line) and a manifest; return the manifest: per corpus and split {docs, chars, bytes}.

    Idempotent: when the manifest exists with the same corpora, fraction, salt and version and
    its files pass data/integrity.py's checks, nothing is rewritten; a damaged manifest or file
    is rebuilt. Files are written to temporary names and renamed. A missing corpus named in
    `optional` is skipped (recorded under "skipped"); any other raises CorpusMissing.
    """
    root = Path(data_dir) / "text"
    manifest_path = root / "manifest.json"
    params = {"version": TEXT_VERSION, "corpora": list(corpora), "heldout_frac": heldout_frac, "salt": salt}
    manifest = _recorded(manifest_path)
    if (manifest is not None and {k: manifest.get(k) for k in params} == params
            and not any(damage(p) for p in _jsonl_files(root, manifest))
            and not any(get_corpus(n).available() for n in manifest["skipped"])):  # installed since?
        return manifest
    say = progress or (lambda msg: None)
    stats, skipped = {}, {}
    for name in corpora:
        spec = get_corpus(name)
        if not spec.available() and name in optional:
            skipped[name] = f"not installed (apt-get install {spec.debian_package})"
            say(f"text: skipping {name}: {skipped[name]}")
            continue
        (root / name).mkdir(parents=True, exist_ok=True)
        final = {s: root / name / f"{s}.jsonl" for s in SPLITS}
        counts = {s: {"docs": 0, "chars": 0, "bytes": 0} for s in SPLITS}
        with open_atomic(final["train"]) as train, open_atomic(final["heldout"]) as held:
            out = {"train": train, "heldout": held}
            for doc in spec.documents():
                s = split_of(doc, heldout_frac, salt)
                out[s].write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                c = counts[s]
                c["docs"] += 1
                c["chars"] += len(doc)
                c["bytes"] += len(doc.encode("utf-8"))
            if counts["train"]["docs"] == 0 or counts["heldout"]["docs"] == 0:  # inside: neither file is kept
                raise ValueError(f"text corpus {name!r}: a split is empty ({counts}); check heldout_frac={heldout_frac}")
        stats[name] = {**counts, "debian_package": spec.debian_package}
        if spec.source:  # fallback text depends on the Python version: recorded, not checked
            stats[name]["source"] = spec.source
        say(f"text: {name}: train {counts['train']['docs']} docs ({counts['train']['bytes'] / 1e6:.1f} MB), "
            f"held-out {counts['heldout']['docs']} docs -> {root / name}")
    manifest = {**params, "stats": stats, "skipped": skipped, "roles": roles_for(corpora)}
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def _recorded(manifest_path: Path) -> dict | None:
    """The text manifest, or None where it is missing or damaged (the text is then rebuilt)."""
    if damage(manifest_path):
        return None
    manifest = json.loads(manifest_path.read_bytes())
    ok = isinstance(manifest, dict) and all(isinstance(manifest.get(k), dict) for k in ("stats", "skipped"))
    return manifest if ok else None


def _jsonl_files(root: Path, manifest: dict) -> list[Path]:
    return [root / n / f"{s}.jsonl" for n in manifest["stats"] for s in SPLITS]


def text_files(data_dir: str | Path) -> list[Path]:
    """The JSONL files the text manifest under data_dir records ([] where it is missing or damaged)."""
    root = Path(data_dir) / "text"
    manifest = _recorded(root / "manifest.json")
    return _jsonl_files(root, manifest) if manifest else []


def prepared_paths(data_dir: str | Path, split: str, corpora=None) -> list[str]:
    """The JSONL files of one split written by write_corpus_text (all prepared corpora by default)."""
    root = Path(data_dir) / "text"
    if not (root / "manifest.json").exists():
        raise FileNotFoundError(f"no prepared text under {root}: run python -m data.prepare")
    manifest = _recorded(root / "manifest.json")
    if manifest is None:
        why = damage(root / "manifest.json") or "not a text manifest"
        raise ValueError(f"{root / 'manifest.json'} is damaged ({why}): rerun python -m data.prepare, "
                         f"which rebuilds it")
    prepared = manifest["stats"]
    names = list(prepared) if corpora is None else list(corpora)
    missing = [n for n in names if n not in prepared]
    if missing:
        raise FileNotFoundError(f"text corpora {missing} were not prepared under {root} (prepared: {sorted(prepared)})")
    return [str(root / n / f"{split}.jsonl") for n in names]
