"""The byte-level BPE tokenizer (data/tokenizer.py): exact round trip, fixed special ids,
deterministic training, save/load, a user's tokenizer.json."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from data.tokenizer import Tokenizer, TokenizerConfig
from model.batch import SpecialTokens

_WORDS = ("the of and a to in is was he for it with as his on be at by had that which from "
          "dictionary word meaning noun verb adjective water light house river stone").split()

TRICKY = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "\n\nnew lines\r\nand\ttabs\t\n",
    "emoji 🤖 family 👩‍👩‍👧 flag 🇫🇷",
    "CJK 漢字 かな カタカナ 한국어",
    "combining e\u0301 a\u0308 and precomposed é ä",
    "<|bos|> looks special <|eoi|><|pad|>",
    "\x00\x01\x7f\u200b\ufeff zero width and controls",
    "ＦＵＬＬＷＩＤＴＨ and ligature ﬁ (NFKC would change these)",
]


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    def word() -> str:  # mostly common words, some made-up ones so there are pairs left to merge
        if rng.random() < 0.8:
            return rng.choice(_WORDS)
        return "".join(rng.choice("aeioubcdfglmnprst") for _ in range(rng.randint(2, 7)))
    return [" ".join(word() for _ in range(rng.randint(5, 30))).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.train(_texts(), vocab_size=400, path=tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_round_trip_is_exact(tok):
    rng = random.Random(1)
    random_strings = ["".join(chr(rng.choice([rng.randint(1, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                              for _ in range(rng.randint(1, 40))) for _ in range(50)]
    for s in TRICKY + random_strings + _texts(20, seed=5):
        assert tok.decode(tok.encode(s)) == s, repr(s)
    assert tok.encode_batch(TRICKY) == [tok.encode(s) for s in TRICKY]
    assert tok.decode(torch.tensor(tok.encode(TRICKY[4]))) == TRICKY[4]


def test_special_ids_are_fixed_and_never_produced_by_encode(tok):
    assert tok.special == SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)
    ids = tok.encode(TRICKY[7])
    assert min(ids) >= 5
    assert tok.decode([1] + tok.encode("hi") + [2]) == "<|bos|>hi<|eos|>"
    assert tok.decode([1] + tok.encode("hi") + [2], skip_special=True) == "hi"
    assert tok.vocab_size == 400
    assert max(max(tok.encode(s), default=0) for s in TRICKY) < tok.vocab_size


def test_training_is_deterministic_and_learns_merges(tmp_path):
    a = Tokenizer.train(_texts(), vocab_size=400, path=tmp_path / "a.json")
    Tokenizer.train(iter(_texts()), vocab_size=400, path=tmp_path / "b.json")  # a one-shot iterator works too
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert a.bytes_per_token(_texts(50, seed=9)) > 2.5  # merges compress the training language
    with pytest.raises(ValueError, match="below 261"):
        Tokenizer.train(_texts(10), vocab_size=100)


def test_save_load_identical(tok, tmp_path):
    tok.save(tmp_path / "sub" / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "sub" / "tokenizer.json")
    assert loaded.special == tok.special and loaded.vocab_size == tok.vocab_size
    assert loaded.encode_batch(TRICKY + _texts(20, seed=3)) == tok.encode_batch(TRICKY + _texts(20, seed=3))
    assert loaded.encode("<|bos|>") == tok.encode("<|bos|>")  # still plain text after reloading
    from_cfg = Tokenizer.from_config(TokenizerConfig(path=str(tmp_path / "sub" / "tokenizer.json")))
    assert from_cfg.encode("the river") == tok.encode("the river")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.load(tmp_path / "nope.json")


def test_token_bytes_count_utf8_bytes(tok):
    table = tok.token_bytes()
    assert table.shape == (tok.vocab_size,) and table[:5].tolist() == [0] * 5
    for s in TRICKY:  # multi-byte characters split across tokens still add up
        assert int(table[tok.encode(s)].sum()) == len(s.encode("utf-8")), repr(s)


def _user_tokenizer(path, specials):
    """A Llama-style user file: BPE over bytes, its own special names, a BOS-adding post-processor."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(_texts(50), trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", hf.token_to_id("<s>"))])
    hf.save(str(path))


def test_user_tokenizer_json(tmp_path):
    _user_tokenizer(tmp_path / "user.json", ["<unk>", "<s>", "</s>", "<img>", "</img>", "<pad>"])
    names = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "boi": "<img>", "eoi": "</img>"}
    user = Tokenizer.load(tmp_path / "user.json", special_names=names)
    assert user.special == SpecialTokens(bos=1, eos=2, boi=3, eoi=4, pad=5)
    assert user.encode("the river")[0] != 1  # the file's post-processor does not add BOS
    assert user.decode(user.encode(TRICKY[4])) == TRICKY[4]


def test_user_tokenizer_missing_special(tmp_path):
    _user_tokenizer(tmp_path / "user.json", ["<s>", "</s>"])
    names = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "boi": "<img>", "eoi": "</img>"}
    with pytest.raises(ValueError, match=r"no token\(s\) \['<pad>', '<img>', '</img>'\].*special_names"):
        Tokenizer.load(tmp_path / "user.json", special_names=names)
    added = Tokenizer.load(tmp_path / "user.json", special_names=names, add_missing=True)
    assert added.special.bos == 0 and added.special.eos == 1
    assert {added.special.pad, added.special.boi, added.special.eoi} == {300, 301, 302}
    assert added.vocab_size == 303
    with pytest.raises(ValueError, match="must name exactly"):
        Tokenizer.load(tmp_path / "user.json", special_names={"bos": "<s>"})


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"version": "1.0"}', b"\xe9t\xe9"])
def test_a_file_that_does_not_load_is_one_line_naming_it(tmp_path, content):
    """tokenizers raises a bare Exception for each of these; the error names the file and the fix."""
    (tmp_path / "tokenizer.json").write_bytes(content)
    with pytest.raises(ValueError) as info:
        Tokenizer.load(tmp_path / "tokenizer.json")
    message = str(info.value)
    assert f"tokenizer file {tmp_path / 'tokenizer.json'} does not load" in message
    assert "python -m data.prepare" in message and "\n" not in message


def test_a_llama_style_file_keeps_its_own_bos_and_eos_and_gets_the_rest_added(tmp_path):
    """Without special_names: <s> and </s> are the file's BOS and EOS; pad and the image markers,
    which it lacks, are added after its vocabulary, said in one line; the saved file reloads to
    the same ids, so data.prepare's copy and every later load agree."""
    _user_tokenizer(tmp_path / "user.json", ["<unk>", "<s>", "</s>"])
    tok = Tokenizer.load(tmp_path / "user.json")
    assert tok.special == SpecialTokens(bos=1, eos=2, pad=300, boi=301, eoi=302) and tok.vocab_size == 303
    assert tok.adopted.endswith("its own bos <s>, eos </s>; added pad <|pad|>, boi <|boi|>, eoi <|eoi|>")
    assert "\n" not in tok.adopted
    tok.save(tmp_path / "saved.json")
    assert Tokenizer.load(tmp_path / "saved.json").special == tok.special
    trained = Tokenizer.train(_texts(50), 300)
    assert trained.adopted == ""  # ours has all five under our names
