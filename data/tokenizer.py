"""Byte-level BPE tokenizer with the five special tokens of the mixed-modal sequence.

Trained with HF `tokenizers` on the training text (the paper uses Llama 2's 32k tokenizer; the
CPU ladder defaults to 2048 entries). Byte-level with no normaliser and no prefix space, so
decode(encode(s)) == s for any string. The specials (model.batch.SpecialTokens) take fixed ids
0..4 in a trained tokenizer: pad, bos, eos, boi, eoi. `encode` never adds them, and text that
happens to contain their spelling is encoded as ordinary bytes, so only the data code places them.

A user may instead load an existing tokenizer.json (a Llama-style one, say). Without
`special_names`, each role takes the file's own special token where it has one under a known
spelling (SPECIAL_ALIASES: <s> and </s>, <|begin_of_text|>, [PAD], ...), and the roles it has no
token for get ours, added at the end of its vocabulary; `adopted` says in one line what was done.
The rule is deterministic, so the file saved after adding reloads to the same ids. Given
`special_names` (e.g. {"bos": "<s>", ...}), exactly those are used, and a missing one is an error
unless add_missing=True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from data.atomic import write_text_atomic
from model.batch import SpecialTokens

SPECIAL_ORDER = ("pad", "bos", "eos", "boi", "eoi")  # ids 0..4 in a trained tokenizer
DEFAULT_SPECIAL_NAMES = {k: f"<|{k}|>" for k in SPECIAL_ORDER}
MIN_VOCAB = 256 + len(SPECIAL_ORDER)  # every byte plus the specials
# The spellings other tokenizers give each role (ours first). No tokenizer has image markers.
SPECIAL_ALIASES = {
    "pad": ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>"),
    "bos": ("<|bos|>", "<s>", "<|begin_of_text|>", "<bos>", "[BOS]", "[CLS]"),
    "eos": ("<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[EOS]", "[SEP]"),
    "boi": ("<|boi|>",),
    "eoi": ("<|eoi|>",),
}


def _adopt(hf: HFTokenizer) -> tuple[dict[str, str], bool, str]:
    """Per role, the file's own spelling where it has one, else ours; whether any is to be added;
    and a line saying what was taken and what added ("" where all five are ours, as in a file
    data.prepare trained)."""
    names, own, added = {}, [], []
    for role in SPECIAL_ORDER:
        found = next((a for a in SPECIAL_ALIASES[role] if hf.token_to_id(a) is not None), None)
        names[role] = found or DEFAULT_SPECIAL_NAMES[role]
        (own if found else added).append(f"{role} {names[role]}")
    if names == DEFAULT_SPECIAL_NAMES and not added:
        return names, False, ""
    return names, bool(added), f"its own {', '.join(own) or 'none'}; added {', '.join(added) or 'none'}"


@dataclass
class TokenizerConfig:
    """path: an existing tokenizer.json to use instead of training one (None: train)."""

    vocab_size: int = 2048
    min_frequency: int = 2
    path: str | None = None
    special_names: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPECIAL_NAMES))


def _byte_decoder() -> dict[str, int]:
    """The byte-level alphabet: printable Latin-1 bytes stand for themselves, the other bytes
    for the code points 256, 257, ... in byte order (the GPT-2 convention `tokenizers` uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class Tokenizer:
    """A `tokenizers` tokenizer plus the ids of BOS/EOS/BOI/EOI/PAD."""

    def __init__(self, hf: HFTokenizer, special_names: dict[str, str] | None = None,
                 add_missing: bool = False, source: str = "<memory>") -> None:
        self.adopted = ""  # what was taken from the file and what added, where special_names was not given
        if special_names is None:
            special_names, add_missing, line = _adopt(hf)
            self.adopted = f"tokenizer {source}: special tokens: {line}" if line else ""
        names = dict(special_names)
        unknown = set(names) ^ set(SPECIAL_ORDER)
        if unknown:
            raise ValueError(f"special_names must name exactly {SPECIAL_ORDER}; got {sorted(names)}")
        missing = [names[k] for k in SPECIAL_ORDER if hf.token_to_id(names[k]) is None]
        if missing and add_missing:
            hf.add_special_tokens(missing)
        elif missing:
            raise ValueError(f"tokenizer {source} has no token(s) {missing} for "
                             f"{[k for k in SPECIAL_ORDER if names[k] in missing]}; pass special_names mapping "
                             f"pad/bos/eos/boi/eoi to tokens it has, or add_missing=True to append them")
        hf.encode_special_tokens = True  # a special's spelling inside text is just text
        self._hf, self.names, self.source = hf, names, source
        self.special = SpecialTokens(**{k: hf.token_to_id(names[k]) for k in SPECIAL_ORDER})

    # ---- building

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2048, path: str | Path | None = None,
              min_frequency: int = 2) -> "Tokenizer":
        """Train a byte-level BPE on `texts` (any iterable of documents; consumed once) and save it
        to `path` when given. Deterministic: the same texts and settings give the same file."""
        if vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size={vocab_size} is below {MIN_VOCAB} "
                             f"(256 bytes + {len(SPECIAL_ORDER)} specials)")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            special_tokens=[DEFAULT_SPECIAL_NAMES[k] for k in SPECIAL_ORDER],  # ids 0..4 in this order
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes: nothing is unknown
        hf.train_from_iterator(texts, trainer=trainer)
        tok = cls(hf)
        if tok.special != SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4):
            raise RuntimeError(f"trained tokenizer has specials {tok.special}, expected ids 0..4")
        if path is not None:
            tok.save(path)
        return tok

    @classmethod
    def load(cls, path: str | Path, special_names: dict[str, str] | None = None,
             add_missing: bool = False) -> "Tokenizer":
        """A tokenizer.json written by `save` or any `tokenizers` file (see module docstring)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist: train one (python -m data.prepare) "
                                    f"or point the config at an existing tokenizer.json")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for bad JSON, UTF-8 or schema
            raise ValueError(f"tokenizer file {path} does not load with the HF tokenizers library ({exc}): point "
                             f"the config at a valid tokenizer.json, or rerun python -m data.prepare if it wrote "
                             f"this one (a damaged one is rebuilt)") from exc
        return cls(hf, special_names, add_missing, source=str(path))

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, texts: Iterable[str] | None = None,
                    save_to: str | Path | None = None) -> "Tokenizer":
        """cfg.path set: load it. Otherwise train on `texts` (saved to save_to when given)."""
        if cfg.path is not None:
            return cls.load(cfg.path, cfg.special_names)
        if texts is None:
            raise ValueError("no tokenizer path in the config and no texts to train one on")
        return cls.train(texts, cfg.vocab_size, save_to, cfg.min_frequency)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json atomically (temporary file, then rename)."""
        write_text_atomic(Path(path), self._hf.to_str(pretty=True))

    # ---- using

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (ids are 0..vocab_size-1)."""
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no specials added."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of `ids` (list or tensor [n]); specials appear by name unless skip_special."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_bytes(self) -> torch.Tensor:
        """UTF-8 bytes each id stands for, long [vocab_size]; 0 for specials. Bits per byte of a
        loss is sum(nats) / (ln 2 * sum(token_bytes[targets])) (nanochat's evaluation)."""
        byte_level = isinstance(self._hf.decoder, decoders.ByteLevel)
        table, specials = _byte_decoder(), set(self.names.values())
        out = torch.zeros(self.vocab_size, dtype=torch.long)
        for i in range(self.vocab_size):
            piece = self._hf.id_to_token(i)
            if piece is None or piece in specials:
                continue
            if byte_level and all(ch in table for ch in piece):
                out[i] = len(piece)  # one character per byte, even inside a split UTF-8 sequence
            else:  # another kind of tokenizer (a user's file): measure the decoded piece
                out[i] = len(self._hf.decode([i]).encode("utf-8"))
        return out

    def bytes_per_token(self, texts: Iterable[str]) -> float:
        """Mean UTF-8 bytes per token over `texts` (compression of this vocabulary on that text)."""
        n_bytes = n_tokens = 0
        for text in texts:
            n_bytes += len(text.encode("utf-8"))
            n_tokens += len(self.encode(text))
        if n_tokens == 0:
            raise ValueError("no tokens in the given texts")
        return n_bytes / n_tokens
