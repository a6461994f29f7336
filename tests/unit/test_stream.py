"""The mixed training stream: exact resume, mixing ratios, caption order."""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data.arrays import ShardSet, caption_arrays, write_index, write_shard
from data.stream import MixedStream, ShardDocuments, ShardPairs, StreamConfig
from model.batch import IMAGE, SpecialTokens

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, boi=3, eoi=4)
P = 16


def _encode(text: str) -> torch.Tensor:
    return torch.tensor([5 + (ord(c) % 90) for c in text])


@functools.cache
def _shard_sets(n_docs: int = 40, n_images: int = 30) -> tuple[Path, Path]:
    """A text and a latent shard set on disk, as data.prepare writes them (captions tokenized)."""
    root = Path(tempfile.mkdtemp(prefix="stream-shards-"))
    g = torch.Generator().manual_seed(123)
    lengths = torch.randint(3, 90, (n_docs,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tokens = torch.randint(5, 100, (int(offsets[-1]),), generator=g, dtype=torch.int32)
    latents = torch.randn(n_images, 4, 8, 8, generator=g)
    captions = [[_encode(f"caption {i} a").tolist(), _encode(f"caption {i} bb").tolist()] for i in range(n_images)]
    write_shard(root / "text", "00000", "text", {"tokens": tokens.numpy(), "offsets": offsets.numpy()})
    write_index(root / "text", ["00000"], {})
    write_shard(root / "images", "00000", "latents", {"latents": latents.numpy(), **caption_arrays(captions)})
    write_index(root / "images", ["00000"], {})
    return root / "text", root / "images"


def _sources(seed=0, n_docs=40, n_images=30):
    text, images = _shard_sets(n_docs, n_images)
    return ShardDocuments(ShardSet(text), seed), ShardPairs(ShardSet(images), seed)


def _stream(cfg=None, seed=0):
    text, pairs = _sources(seed)
    return MixedStream(cfg or StreamConfig(seq_len=64, batch_rows=4, seed=seed), SPECIAL, P, text, pairs, _encode)


def _same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in
               ("tokens", "modality", "image_id", "doc_id", "position", "images", "image_first"))


def test_restore_gives_identical_batches_through_a_file():
    reference = _stream()
    batches = [reference.next_batch() for _ in range(12)]
    interrupted = _stream()
    for _ in range(5):
        interrupted.next_batch()
    buf = io.BytesIO()
    torch.save(interrupted.state_dict(), buf)
    buf.seek(0)
    resumed = _stream()
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    for expected in batches[5:]:
        assert _same(resumed.next_batch(), expected)


def test_same_seed_same_batches_and_other_seed_differs():
    a, b, c = _stream(), _stream(), _stream(seed=1)
    ba, bb, bc = a.next_batch(), b.next_batch(), c.next_batch()
    assert _same(ba, bb) and not _same(ba, bc)


def test_text_and_image_elements_mix_one_to_one():
    stream = _stream(StreamConfig(seq_len=128, batch_rows=8))
    for _ in range(30):
        stream.next_batch()
    ratio = stream.text_elements / (stream.text_elements + stream.pair_elements)
    assert abs(ratio - 0.5) < 0.03
    # The counters agree with what the batches hold (padding excluded).
    stream2 = _stream(StreamConfig(seq_len=128, batch_rows=8, text_share=0.25))
    n_real = sum(stream2.next_batch().num_elements for _ in range(30))
    held = sum(r.used for r in stream2.packer.full) + stream2.packer.row.used
    assert n_real + held == stream2.text_elements + stream2.pair_elements
    assert abs(stream2.text_elements / (n_real + held) - 0.25) < 0.03


def _image_docs(batch):
    """Per image: (has a caption in its document, is flagged image-first)."""
    out = []
    for r in range(batch.doc_id.shape[0]):
        for doc in batch.doc_id[r][batch.modality[r] == IMAGE].unique().tolist():
            in_doc = batch.doc_id[r] == doc
            out.append(int((in_doc & (batch.modality[r] != IMAGE)).sum()) > 4)  # more than BOS BOI EOI EOS
    return torch.tensor(out)


def test_caption_first_share_and_extreme_shares():
    stream = _stream(StreamConfig(seq_len=128, batch_rows=8, text_share=0.0, caption_dropout=0.0))
    flags = torch.cat([stream.next_batch().image_first for _ in range(40)])
    assert abs(flags.float().mean().item() - 0.2) < 0.06
    text_only = _stream(StreamConfig(seq_len=64, batch_rows=4, text_share=1.0))
    assert not (text_only.next_batch().modality == IMAGE).any()
    images_only = _stream(StreamConfig(seq_len=64, batch_rows=4, text_share=0.0))
    b = images_only.next_batch()
    for r in range(b.doc_id.shape[0]):  # every document of every row holds an image
        docs = set(b.doc_id[r][b.doc_id[r] >= 0].tolist())
        assert docs == set(b.doc_id[r][b.modality[r] == IMAGE].tolist())

def _captions_seen(stream, n=80, order=None) -> set[str]:
    """Which of _sources' captions ("caption <i> a" or "caption <i> bb") the pairs trained on;
    order "before" / "after": only captions before / after their image."""
    names = {tuple(_encode(f"caption {i} {v}").tolist()): v for i in range(30) for v in ("a", "bb")}
    seen = set()
    for _ in range(n):
        ex = stream.next_example()
        kinds = [type(seg).__name__ for seg in ex]
        if "Text" in kinds and order in (None, "before" if kinds[0] == "Text" else "after"):
            seen.add(names[tuple(ex[kinds.index("Text")].ids.tolist())])
    return seen


def test_caption_policy_first_trains_on_each_images_first_caption_only():
    """data.captions: "all" draws among an image's captions, "first" always takes the first,
    "describe" the first after an image and any before one; the RNG draws the same numbers
    whatever the policy, so the images and orders stay the same."""
    cfg = dict(seq_len=128, batch_rows=4, text_share=0.0, caption_dropout=0.0)
    every = _captions_seen(_stream(StreamConfig(**cfg)))
    first = _captions_seen(_stream(StreamConfig(**cfg, captions="first")))
    assert every == {"a", "bb"} and first == {"a"}
    describe = dict(**cfg, captions="describe", caption_first=0.5)
    assert _captions_seen(_stream(StreamConfig(**describe)), order="after") == {"a"}  # a description
    assert _captions_seen(_stream(StreamConfig(**describe)), order="before") == {"a", "bb"}  # any prompt
    a, b = _stream(StreamConfig(**cfg)), _stream(StreamConfig(**cfg, captions="first"))
    for _ in range(20):
        x, y = a.next_example(), b.next_example()
        assert [type(s).__name__ for s in x] == [type(s).__name__ for s in y]  # the same order
        assert torch.equal(*[next(s.data for s in ex if type(s).__name__ == "Image") for ex in (x, y)])
    with pytest.raises(ValueError, match="captions='some'.*all, first"):
        StreamConfig(captions="some").validate()


def test_caption_dropout_gives_unconditional_images_exempt_from_the_noise_limit():
    stream = _stream(StreamConfig(seq_len=128, batch_rows=8, text_share=0.0, caption_dropout=0.3))
    batches = [stream.next_batch() for _ in range(40)]
    captioned = torch.cat([_image_docs(b) for b in batches])
    first = torch.cat([b.image_first for b in batches])
    assert abs((~captioned).float().mean().item() - 0.3) < 0.06
    assert not (first & ~captioned).any()  # an image alone is never noise-limited
    assert abs(first[captioned].float().mean().item() - 0.2) < 0.06  # the pairs keep 80/20
    # the default is 10%, and 0 turns it off
    assert StreamConfig().caption_dropout == 0.1
    none = _stream(StreamConfig(seq_len=128, batch_rows=8, text_share=0.0, caption_dropout=0.0))
    assert torch.cat([_image_docs(none.next_batch()) for _ in range(10)]).all()
    with pytest.raises(ValueError, match="caption_dropout"):
        StreamConfig(caption_dropout=1.5).validate()


def test_clear_errors():
    text, pairs = _sources()
    with pytest.raises(ValueError, match="text_share"):
        StreamConfig(text_share=1.5).validate()
    with pytest.raises(ValueError, match="no image source"):
        MixedStream(StreamConfig(), SPECIAL, P, text, None, _encode)
    with pytest.raises(ValueError, match="not latents or codes"):
        ShardPairs(text.shards)
    with pytest.raises(ValueError, match="not text"):
        ShardDocuments(pairs.shards)


def test_real_scale_sources_resume_exactly(tmp_path):
    """JSONL text shards tokenized on the fly and WebDataset image shards encoded on the fly
    (a small untrained VAE) resume through the stream's state exactly."""
    import io as _io
    import json
    import tarfile

    from PIL import Image as PILImage

    from data.autoencoders import AutoencoderConfig, ImageAutoencoder, build_diffusers_model
    from data.image_text import WebDatasetReader
    from data.stream import EncodedImages, TokenizedText
    from data.text_readers import TextReader, TextSpec

    g = torch.Generator().manual_seed(0)
    for shard in range(2):
        with open(tmp_path / f"text-{shard}.jsonl", "w") as f:
            for i in range(7):
                f.write(json.dumps({"text": f"document {shard}-{i} " + "word " * (3 + i * 5)}) + "\n")
        with tarfile.open(tmp_path / f"img-{shard}.tar", "w") as tar:
            for i in range(5):
                pixels = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8).numpy()
                png = _io.BytesIO()
                PILImage.fromarray(pixels).save(png, format="PNG")
                for name, payload in ((f"s{shard}{i}.png", png.getvalue()), (f"s{shard}{i}.txt", f"cap {shard} {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, _io.BytesIO(payload))
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="kl", image_size=16, latent_channels=4, downsample=4,
                            block_out_channels=(8, 8, 8), norm_groups=4)
    ae = ImageAutoencoder(build_diffusers_model(cfg).eval(), "kl", 16, config=cfg)

    def stream():
        text = TokenizedText(TextReader(TextSpec(str(tmp_path / "text-*.jsonl")), repeat=True),
                             lambda s: [5 + (ord(c) % 90) for c in s])
        images = EncodedImages(WebDatasetReader(str(tmp_path / "img-*.tar"), image_size=16, loop=True), ae)
        return MixedStream(StreamConfig(seq_len=48, batch_rows=2), SPECIAL, 4, text, images, _encode)

    reference = stream()
    batches = [reference.next_batch() for _ in range(9)]
    interrupted = stream()
    for _ in range(4):
        interrupted.next_batch()
    state = interrupted.state_dict()
    resumed = stream()
    resumed.load_state_dict(state)
    for expected in batches[4:]:
        assert _same(resumed.next_batch(), expected)
