"""`python -m data.prepare` builds the embedded default offline, and a second call does nothing."""

from __future__ import annotations

import pytest
import torch

from data.embedded import EmbeddedData
from data.prepare import Prepare, PrepareConfig, main
from data.stream import MixedStream, StreamConfig

def test_second_call_does_nothing(prepared, tiny_prepare):
    root, first = prepared
    assert any("building" in line for line in first)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again: list[str] = []
    Prepare(root, tiny_prepare, log=again.append).run()
    assert again and all("up to date" in line for line in again), again
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


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
    assert rebuilt == {"autoencoders/shapes/kl", "autoencoders/shapes/vq", "encoded/shapes/kl", "encoded/shapes/vq"}


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
    (broken / "tokens" / "train.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="unreadable"):
        EmbeddedData(broken).text_documents("train")
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
    assert rebuilt == {"tokenizer", "tokens"}
    assert (copy / "tokenizer.json").read_bytes() == given.read_bytes()


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
    assert rebuilt == {"images/shapes-2", "encoded/shapes-2/kl", "encoded/shapes-2/vq"}  # no autoencoder trained
    assert not (copy / "autoencoders" / "shapes-2").exists()
    data = EmbeddedData(copy)
    for split in ("train", "test"):
        scenes = data.image_set("shapes-2", split)["captions"]
        counts = [c[0].count(" and ") + c[0].count(", ") + 1 for c in scenes]  # objects in the full description
        assert max(counts) <= 2 and min(counts) == 1, counts
    assert data.encoded("shapes-2", "train", "kl").shape == data.encoded("shapes", "train", "kl").shape
    assert data.paths.autoencoder("shapes-2", "vq") == data.paths.autoencoder("shapes", "vq")
