"""`python -m data.prepare` builds the embedded default offline, and a second call does nothing;
a damaged file is named and rebuilt, two prepares at once build once, and a fault a user can fix
ends in one line with the fix and exit status 2."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.corpora import get_corpus
from data.embedded import EmbeddedData
from data.prepare import Prepare, PrepareConfig, main
from data.stream import MixedStream, StreamConfig

REPO = Path(__file__).resolve().parents[2]
LOCK = ".prepare.lock"  # rewritten by every run with its pid (data/lock.py)


def _cli(cfg: PrepareConfig, root: Path) -> list[str]:
    """The command-line arguments that give `cfg` in `root`."""
    args = ["--data-dir", str(root)]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        args += [f"--{f.name.replace('_', '-')}", ",".join(value) if isinstance(value, tuple) else str(value)]
    return args


def _one_line(err: str, *parts: str) -> str:
    """The single error line on stderr, checked to contain `parts`."""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(part in err for part in parts), (parts, err)
    return err


def _rebuilt(lines: list[str]) -> set[str]:
    return {line.split(":")[0].split()[-1] for line in lines if "building" in line}


def test_second_call_does_nothing(prepared, tiny_prepare):
    root, first = prepared
    assert any("building" in line for line in first)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != LOCK}
    again: list[str] = []
    Prepare(root, tiny_prepare, log=again.append).run()
    assert again and all("up to date" in line for line in again), again
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != LOCK} == before


def test_prepared_data_feeds_the_stream(prepared):
    root, _ = prepared
    data = EmbeddedData(root)
    tok = data.tokenizer
    assert tok.vocab_size <= 300
    latents = data.encoded("shapes", "train", "kl")
    codes = data.encoded("shapes", "val", "vq")
    assert latents.shape == (48, 8, 8, 8) and codes.shape == (16, 8, 8)
    assert 0 <= int(codes.min()) and int(codes.max()) < data.autoencoder("shapes", "vq").codebook_size
    wiki = data.text_documents("heldout_wiki")
    assert wiki.next().numel() > 0
    stream = MixedStream(StreamConfig(seq_len=96, batch_rows=2), tok.special, 16, data.text_documents("train"),
                         data.pairs("shapes", "train", "kl"), lambda s: torch.tensor(tok.encode(s)))
    batch = stream.next_batch()
    assert batch.images.shape[1:] == (8, 8, 8) and batch.num_elements > 0
    stats = data.manifest["steps"]["autoencoders/shapes/kl"]["stats"]
    assert {"val_psnr", "checker_on_reconstructions", "checker_on_originals"} <= set(stats)
    assert stats["checker_on_originals"] >= 0.99


def test_changed_setting_rebuilds_only_what_depends_on_it(prepared, tiny_prepare, tmp_path):
    root, _ = prepared
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    lines: list[str] = []
    Prepare(copy, PrepareConfig(**{**tiny_prepare.__dict__, "ae_steps": 4}), log=lines.append).run()
    rebuilt = {line.split(":")[0].split()[-1] for line in lines if "building" in line}
    assert rebuilt == {"autoencoders/shapes/kl", "autoencoders/shapes/vq", "encoded/shapes/kl", "encoded/shapes/vq",
                       "shards/shapes/kl", "shards/shapes/vq"}


def test_clear_errors(prepared, tmp_path, capsys):
    root, _ = prepared
    with pytest.raises(FileNotFoundError, match="python -m data.prepare"):
        EmbeddedData(tmp_path / "nothing")
    data = EmbeddedData(root)
    with pytest.raises(ValueError, match="unknown autoencoder kind"):
        data.encoded("shapes", "train", "vae")
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(root, broken)
    (broken / "shards" / "text_train" / "00000.tokens.npy").write_bytes(b"not an array file")
    with pytest.raises(ValueError, match="00000.tokens.npy is unreadable"):
        EmbeddedData(broken).text_documents("train").next()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["--data-dir", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_given_tokenizer_replaces_training(prepared, tiny_prepare, tmp_path):
    import shutil

    root, _ = prepared
    given = tmp_path / "mine.json"
    shutil.copy(root / "tokenizer.json", given)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    lines: list[str] = []
    Prepare(copy, PrepareConfig(**{**tiny_prepare.__dict__, "tokenizer": str(given)}), log=lines.append).run()
    rebuilt = {line.split(":")[0].split()[-1] for line in lines if "building" in line}
    assert rebuilt == {"tokenizer", "tokens", "shards/shapes/kl", "shards/shapes/vq"}
    assert (copy / "tokenizer.json").read_bytes() == given.read_bytes()
    (copy / "tokenizer.json").write_text("garbage")  # the stored copy is damaged: copied again
    lines.clear()
    Prepare(copy, PrepareConfig(**{**tiny_prepare.__dict__, "tokenizer": str(given)}), log=lines.append).run()
    assert _rebuilt(lines) == {"tokenizer"} and (copy / "tokenizer.json").read_bytes() == given.read_bytes()


def test_a_shapes_variant_is_rendered_and_encoded_with_the_base_worlds_autoencoders(prepared, tiny_prepare, tmp_path):
    """data/worlds.py: "shapes-2" draws at most 2 objects per scene, trains no autoencoder of its
    own and is encoded with shapes' (prepared first when only the variant is asked for)."""
    import shutil

    root, _ = prepared
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    lines: list[str] = []
    Prepare(copy, PrepareConfig(**{**tiny_prepare.__dict__, "datasets": ("shapes-2",)}), log=lines.append).run()
    rebuilt = {line.split(":")[0].split()[-1] for line in lines if "building" in line}
    assert rebuilt == {"images/shapes-2", "encoded/shapes-2/kl", "encoded/shapes-2/vq", "shards/shapes-2/kl",
                       "shards/shapes-2/vq"}  # no autoencoder trained
    assert not (copy / "autoencoders" / "shapes-2").exists()
    data = EmbeddedData(copy)
    for split in ("train", "test"):
        scenes = data.image_set("shapes-2", split)["captions"]
        counts = [c[0].count(" and ") + c[0].count(", ") + 1 for c in scenes]  # objects in the full description
        assert max(counts) <= 2 and min(counts) == 1, counts
    assert data.encoded("shapes-2", "train", "kl").shape == data.encoded("shapes", "train", "kl").shape
    assert data.paths.autoencoder("shapes-2", "vq") == data.paths.autoencoder("shapes", "vq")


@pytest.mark.parametrize("content", [b"", b'{"version": "1.0"}'])
def test_a_damaged_tokenizer_is_named_and_rebuilt(prepared, tiny_prepare, tmp_path, content):
    """Present is not done: an empty file, or JSON that is no tokenizer, is rebuilt."""
    root, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "tokenizer.json").write_bytes(content)
    lines: list[str] = []
    Prepare(copy, tiny_prepare, log=lines.append).run()
    damaged = [line for line in lines if "damaged" in line]
    assert len(damaged) == 1 and f"{copy / 'tokenizer.json'} is damaged" in damaged[0], lines
    assert _rebuilt(lines) == {"tokenizer"}  # training is deterministic: the same file, tokens stand
    assert (copy / "tokenizer.json").read_bytes() == (root / "tokenizer.json").read_bytes()


def test_a_given_tokenizer_that_does_not_load_is_one_line(prepared, tiny_prepare, tmp_path, capsys):
    root, _ = prepared
    copy, mine = tmp_path / "copy", tmp_path / "mine.json"
    shutil.copytree(root, copy)
    mine.write_text("garbage")
    assert main([*_cli(tiny_prepare, copy), "--tokenizer", str(mine)]) == 2
    _one_line(capsys.readouterr().err, f"--tokenizer {mine} cannot be used", "leave --tokenizer out")


def test_damaged_prepared_text_is_named_and_rebuilt(prepared, tiny_prepare, tmp_path):
    root, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    text = copy / "text" / "wordnet" / "train.jsonl"
    raw = bytearray(text.read_bytes())
    at = raw.index(b"(noun)")
    raw[at] = 0xE9  # a Latin-1 byte in the middle of a line
    text.write_bytes(bytes(raw))
    lines: list[str] = []
    Prepare(copy, tiny_prepare, log=lines.append).run()
    assert any(f"{text} is damaged (byte 0xe9 at offset {at} is not UTF-8)" in line for line in lines), lines
    assert _rebuilt(lines) == {"text"}
    assert text.read_bytes() == (root / "text" / "wordnet" / "train.jsonl").read_bytes()


@pytest.mark.parametrize("content, problem", [(b'{"steps": ', "(not JSON: Expecting value at line 1 column 11)"),
                                              (b"\xe9t\xe9", "(byte 0xe9 at offset 0 is not UTF-8)"),
                                              (b'{"steps": []}', "(not a prepare manifest")])
def test_a_corrupt_manifest_is_one_line(tiny_prepare, tmp_path, capsys, content, problem):
    """The manifest records which settings built the files, so prepare stops rather than guess."""
    (tmp_path / "manifest.json").write_bytes(content)
    assert main(_cli(tiny_prepare, tmp_path)) == 2
    _one_line(capsys.readouterr().err, f"{tmp_path / 'manifest.json'} is corrupt {problem}",
              f"delete it and rerun python -m data.prepare --data-dir {tmp_path}")
    assert (tmp_path / "manifest.json").read_bytes() == content


def test_two_prepares_at_once_build_once(tmp_path):
    """Two real processes on one data dir: the second waits for the first, naming its pid, and
    then finds every step done."""
    if not get_corpus("fortunes").available():
        pytest.skip("needs the Debian package fortunes (apt-get install fortunes)")
    cfg = PrepareConfig(vocab_size=300, corpora=("fortunes",), train_images=8, eval_images=4, ae_steps=1, ae_batch=4)
    cmd = [sys.executable, "-m", "data.prepare", *_cli(cfg, tmp_path / "data")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = dict(cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen(cmd, **run)
    head = first.stdout.readline()  # printed once it holds the lock and starts the first step
    assert "text: building" in head, head + first.communicate()[1]
    second = subprocess.Popen(cmd, **run)
    out2, err2 = second.communicate(timeout=600)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    built = [line for line in (head + out1).splitlines() if line.endswith("building ...")]
    said = [line for line in out2.splitlines() if line.startswith("[prepare]")]
    assert len(built) == 10 and "building" not in out2, out2
    assert said[0] == (f"[prepare] another python -m data.prepare (pid {first.pid}) is writing {tmp_path / 'data'}: "
                       f"waiting for it to finish")
    assert sum("up to date" in line for line in said) == len(built)


def _needs_tiny_corpora(cfg: PrepareConfig) -> None:
    for name in cfg.corpora:
        if not get_corpus(name).available():
            pytest.skip(f"needs the Debian package {get_corpus(name).debian_package}")


def test_a_full_disk_is_one_line(tiny_prepare, tmp_path, capsys, full_disk):
    """conftest's full_disk fails every write with ENOSPC, as a full disk does (naming no file)."""
    _needs_tiny_corpora(tiny_prepare)
    assert main(_cli(tiny_prepare, tmp_path)) == 2
    _one_line(capsys.readouterr().err, f"disk full while writing {tmp_path / 'text' / 'wordnet'}",
              "free space on that disk")


def test_a_data_dir_under_a_file_is_one_line(tiny_prepare, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(_cli(tiny_prepare, tmp_path / "a_file" / "data")) == 2
    _one_line(capsys.readouterr().err, f"cannot create {tmp_path / 'a_file' / 'data'} (Not a directory)",
              "choose another --data-dir")


def test_a_read_only_data_dir_is_one_line(tiny_prepare, tmp_path, capsys, monkeypatch):
    """As an unprivileged user meets it: root writes through chmod, so creating files and
    directories under it is refused here."""
    _needs_tiny_corpora(tiny_prepare)
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path) -> None:
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    assert main(_cli(tiny_prepare, tmp_path)) == 2
    _one_line(capsys.readouterr().err, f"cannot write {tmp_path}", "(Permission denied)", f"make {tmp_path} writable")
