"""Real image-caption readers (WebDataset shards, COCO, Karpathy splits) and Fashion-MNIST.

Every archive is written here, in tmp_path: PNGs for pixel-exact checks, tar shards with the
stdlib, captions JSON files. The real Fashion-MNIST files are parsed when the Debian package is
installed; the IDX parser is also checked on a tiny file written here.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import fashion_mnist as fm
from data.image_text import (CocoCaptions, ImageTextConfig, KarpathyCaptions, WebDatasetReader, decode_image,
                             open_image_text)

S = 8  # image side used throughout: images are written at S x S so that png round trips are exact


def _pixels(seed: int, h: int = S, w: int = S) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _shards(tmp_path: Path, n_shards: int = 3, per_shard: int = 4) -> tuple[list[Path], dict]:
    """Shards of png samples alternating .txt and .json captions; returns the paths and
    {key: (pixels, captions)}."""
    paths, expected = [], {}
    for s in range(n_shards):
        members = []
        for i in range(per_shard):
            key = f"s{s}_{i:03d}"
            pixels, caption = _pixels(100 * s + i), f"caption {s} {i}"
            members.append((f"{key}.png", _encode(pixels)))
            if i % 2:
                members.append((f"{key}.json", json.dumps({"caption": caption, "width": S}).encode()))
            else:
                members.append((f"{key}.txt", caption.encode()))
            expected[key] = (pixels, [caption])
        paths.append(_write_tar(tmp_path / f"shard-{s:03d}.tar", members))
    return paths, expected


def _keys(records) -> list[str]:
    return [r.meta["key"] for r in records]


# ----------------------------------------------------------------------------- WebDataset


def test_webdataset_images_exact_captions_and_order(tmp_path):
    paths, expected = _shards(tmp_path)
    records = list(WebDatasetReader(str(tmp_path / "shard-*.tar"), image_size=S))
    assert _keys(records) == list(expected)  # shards sorted, members in tar order
    for r in records:
        pixels, captions = expected[r.meta["key"]]
        assert r.image.dtype == torch.uint8 and r.image.shape == (3, S, S)
        assert torch.equal(r.image, _chw(pixels))
        assert r.captions == captions
    assert records[1].meta["json"] == {"caption": "caption 0 1", "width": S}
    # A second reader gives the same sequence; an explicit list keeps its own order.
    assert _keys(WebDatasetReader(str(tmp_path / "shard-*.tar"), image_size=S)) == list(expected)
    backwards = _keys(WebDatasetReader([str(p) for p in reversed(paths)], image_size=S))
    assert backwards == [k for k in expected if k.startswith("s2")] + \
        [k for k in expected if k.startswith("s1")] + [k for k in expected if k.startswith("s0")]


def test_webdataset_grouping_json_list_field_and_gzip(tmp_path):
    a, b = _pixels(1), _pixels(2)
    _write_tar(tmp_path / "x.tgz", [
        ("part/a.png", _encode(a)),
        ("part/a.json", json.dumps({"captions": ["first", " second "]}).encode()),
        ("part/b.seg.png", _encode(b)),  # key is up to the first dot: "part/b"
        ("part/b.json", json.dumps({"captions": "only"}).encode()),
    ])
    records = list(WebDatasetReader(tmp_path / "x.tgz", image_size=S, caption_field="captions"))
    assert _keys(records) == ["part/a", "part/b"]
    assert records[0].captions == ["first", "second"] and records[1].captions == ["only"]
    assert torch.equal(records[1].image, _chw(b))


def test_webdataset_skips_incomplete_samples_with_counted_warning(tmp_path):
    _write_tar(tmp_path / "a.tar", [
        ("ok.png", _encode(_pixels(0))), ("ok.txt", b"fine"),
        ("noimage.txt", b"orphan caption"),
        ("nocaption.png", _encode(_pixels(1))),
        ("wrongfield.png", _encode(_pixels(2))), ("wrongfield.json", b'{"alt": "x"}'),
    ])
    reader = WebDatasetReader(tmp_path / "a.tar", image_size=S)
    with pytest.warns(UserWarning, match=r"skipped 3 of 4 samples \(2 no caption, 1 no image; first: noimage\)"):
        records = list(reader)
    assert _keys(records) == ["ok"]
    assert reader.skipped == {"no caption": 2, "no image": 1}


def test_center_crop_and_resize(tmp_path):
    wide = _pixels(5, h=S, w=S + 6)  # 8 x 14: the central 8 x 8 square starts at column 3
    image = decode_image(_encode(wide), "wide.png", image_size=S)
    assert torch.equal(image, _chw(wide[:, 3:3 + S]))
    assert decode_image(_encode(wide), "wide.png", image_size=4).shape == (3, 4, 4)
    assert decode_image(_encode(wide), "wide.png", image_size=None).shape == (3, S, S + 6)
    # JPEG is lossy: a smooth image comes back close, not exact; gray and RGBA become RGB.
    smooth = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 16, 3)).copy()
    jpg = decode_image(_encode(smooth, "JPEG"), "smooth.jpg", image_size=16)
    assert (jpg.float() - _chw(smooth).float()).abs().mean() < 4
    gray = Image.fromarray(smooth[..., 0], mode="L")
    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    assert decode_image(buf.getvalue(), "g.png", image_size=16).shape == (3, 16, 16)


def _read_n(reader: WebDatasetReader, n: int) -> list:
    out, it = [], iter(reader)
    for _ in range(n):
        out.append(next(it))
    return out


@pytest.mark.filterwarnings("ignore:.*skipped")
def test_webdataset_resume_gives_exactly_the_rest(tmp_path):
    paths, _ = _shards(tmp_path, n_shards=3, per_shard=3)
    # A skipped sample in the middle shard: resume positions count it too.
    _write_tar(paths[1], [("s1_000.png", _encode(_pixels(9))), ("s1_000.txt", b"c"), ("s1_bad.txt", b"no image"),
                          ("s1_001.png", _encode(_pixels(8))), ("s1_001.txt", b"d")])
    full = _keys(WebDatasetReader(paths, image_size=S))
    assert len(full) == 8
    for cut in range(len(full) + 1):
        first = WebDatasetReader(paths, image_size=S)
        head = _keys(_read_n(first, cut))
        resumed = WebDatasetReader(paths, image_size=S)
        resumed.load_state_dict(first.state_dict())
        assert head + _keys(resumed) == full, cut


def test_webdataset_loop_shuffle_and_resume_across_epochs(tmp_path):
    paths, expected = _shards(tmp_path, n_shards=4, per_shard=2)
    kwargs = dict(image_size=S, loop=True, shuffle_shards=True, seed=3)
    stream = _keys(_read_n(WebDatasetReader(paths, **kwargs), 24))  # three epochs
    epochs = [stream[i:i + 8] for i in range(0, 24, 8)]
    assert all(sorted(e) == sorted(expected) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # the shard order changes between epochs
    assert stream == _keys(_read_n(WebDatasetReader(paths, **kwargs), 24))  # same seed, same stream
    first = WebDatasetReader(paths, **kwargs)
    _read_n(first, 11)
    assert first.state_dict()["epoch"] == 1
    resumed = WebDatasetReader(paths, **kwargs)
    resumed.load_state_dict(first.state_dict())
    assert _keys(_read_n(resumed, 13)) == stream[11:]


def test_webdataset_ranks_split_shards(tmp_path):
    paths, expected = _shards(tmp_path, n_shards=4, per_shard=2)
    parts = [_keys(WebDatasetReader(paths, image_size=S, rank=r, world_size=2)) for r in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(expected)


def test_webdataset_errors(tmp_path):
    with pytest.raises(ValueError, match="empty shard list"):
        WebDatasetReader([])
    with pytest.raises(FileNotFoundError, match="no shards match"):
        WebDatasetReader(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        WebDatasetReader(tmp_path / "missing.tar")
    big = _write_tar(tmp_path / "big.tar", [("k.png", _encode(_pixels(0, 12, 12))), ("k.txt", b"c")])
    with pytest.raises(ValueError, match=r"big.tar: k.png is 12x12, expected 8x8 \(resizing is off"):
        list(WebDatasetReader(big, image_size=S, resize=False))
    bad = _write_tar(tmp_path / "bad.tar", [("k.jpg", b"\xff\xd8 not a jpeg"), ("k.txt", b"c")])
    with pytest.raises(ValueError, match=r"corrupt or unreadable image .*bad.tar: k.jpg"):
        list(WebDatasetReader(bad, image_size=S))
    tolerant = WebDatasetReader(bad, image_size=S, skip_corrupt=True)
    with pytest.warns(UserWarning, match="1 corrupt image"):
        assert list(tolerant) == []
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable image-caption samples"):
        next(iter(WebDatasetReader(bad, image_size=S, skip_corrupt=True, loop=True)))


# ----------------------------------------------------------------------------- COCO, Karpathy


def test_coco_groups_captions_per_image(tmp_path):
    folder = tmp_path / "val2014"
    folder.mkdir()
    pixels = {i: _pixels(i) for i in (7, 3, 5)}
    for i, p in pixels.items():
        Image.fromarray(p).save(folder / f"img_{i}.png")
    data = {"images": [{"id": i, "file_name": f"img_{i}.png"} for i in pixels],
            "annotations": [{"id": 1, "image_id": 7, "caption": "a cat "},
                            {"id": 2, "image_id": 3, "caption": "a dog"},
                            {"id": 3, "image_id": 7, "caption": "a sleeping cat"},
                            {"id": 4, "image_id": 99, "caption": "x"}]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="skipped 1 images without captions; 1 annotated image ids have no image"):
        coco = CocoCaptions(tmp_path / "captions.json", folder, image_size=S)
    assert len(coco) == 2
    assert [r.meta["image_id"] for r in coco] == [7, 3]  # the file's image order
    assert coco[0].captions == ["a cat", "a sleeping cat"] and coco[1].captions == ["a dog"]
    assert torch.equal(coco[0].image, _chw(pixels[7])) and coco[0].meta["file_name"] == "img_7.png"
    (folder / "img_3.png").unlink()
    with pytest.raises(FileNotFoundError, match="img_3.png"):
        coco[1]
    with pytest.raises(FileNotFoundError, match="COCO captions file"):
        CocoCaptions(tmp_path / "nope.json", folder)
    with pytest.raises(FileNotFoundError, match="COCO image folder"):
        CocoCaptions(tmp_path / "captions.json", tmp_path / "no_dir")


def _karpathy(tmp_path: Path) -> Path:
    images = []
    for i, split in enumerate(["train", "restval", "val", "test", "test", "train"]):
        subdir = "train2014" if split == "train" else "val2014"
        (tmp_path / subdir).mkdir(exist_ok=True)
        name = f"COCO_{subdir}_{i:012d}.png"
        Image.fromarray(_pixels(50 + i)).save(tmp_path / subdir / name)
        images.append({"filepath": subdir, "filename": name, "split": split, "cocoid": 1000 + i, "imgid": i,
                       "sentences": [{"raw": f"image {i} ref {j} ", "tokens": []} for j in range(5)]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def test_karpathy_split_filter(tmp_path):
    path = _karpathy(tmp_path)
    test = KarpathyCaptions(path, tmp_path, split="test", image_size=S)
    assert [r.meta["image_id"] for r in test] == [1003, 1004]
    assert test[0].captions == [f"image 3 ref {j}" for j in range(5)]
    assert torch.equal(test[1].image, _chw(_pixels(54)))
    assert [r.meta["split"] for r in KarpathyCaptions(path, tmp_path, split="train+restval", image_size=S)] == \
        ["train", "restval", "train"]
    assert len(KarpathyCaptions(path, tmp_path, split=["val", "test"], image_size=S)) == 3
    with pytest.raises(ValueError, match="unknown Karpathy split"):
        KarpathyCaptions(path, tmp_path, split="testing")


def test_config_opens_each_format(tmp_path):
    path = _karpathy(tmp_path)
    reader = open_image_text(ImageTextConfig(format="karpathy", path=str(path), image_dir=str(tmp_path),
                                             split="val", image_size=4))
    assert len(reader) == 1 and reader[0].image.shape == (3, 4, 4)
    _shards(tmp_path, n_shards=1, per_shard=2)
    wds = open_image_text(ImageTextConfig(path=str(tmp_path / "shard-*.tar"), image_size=S), loop=True)
    assert isinstance(wds, WebDatasetReader) and wds.loop
    with pytest.raises(ValueError, match="valid: webdataset, coco, karpathy"):
        open_image_text(ImageTextConfig(format="lmdb"))


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_idx_round_trip(tmp_path):
    for name, array in [("a-idx3-ubyte.gz", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
                        ("b-idx1-ubyte", np.array([5, -7, 70000], dtype=np.int32)),
                        ("c-idx2.gz", np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))]:
        fm.write_idx(tmp_path / name, array)
        back = fm.read_idx(tmp_path / name)
        assert back.dtype == array.dtype and np.array_equal(back, array)
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        fm.read_idx(tmp_path / "junk")


def test_fashion_mnist_source_on_a_tiny_copy(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 6), ("t10k", 3)]:
        fm.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        fm.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) + 4)
    raw, labels = fm.load_split(tmp_path, "train")
    native = fm.FashionMNIST(tmp_path, "train", image_size=None)
    assert native.images().shape == (6, 3, 28, 28)
    assert torch.equal(native.images()[:, 1], torch.from_numpy(raw))  # gray repeated into R, G, B
    small = fm.FashionMNIST(tmp_path, "test", image_size=16)
    assert len(small) == 3 and small.images().shape == (3, 3, 16, 16) and small.images().dtype == torch.uint8
    item = small[1]
    assert item.meta == {"label": 5, "class_name": "Sandal", "index": 1, "split": "test"}
    assert "a photo of a sandal" in item.captions
    assert fm.captions_for(9)[:2] == ["a photo of an ankle boot", "an ankle boot"]
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*root="):
        fm.FashionMNIST(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split"):
        fm.FashionMNIST(tmp_path, "val")


@pytest.mark.skipif(not (fm.DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST not installed under {fm.DEFAULT_ROOT} "
                           "(Debian package dataset-fashion-mnist)")
def test_fashion_mnist_real_files():
    train = fm.FashionMNIST(split="train", image_size=32)
    assert len(train) == 60000 and train.images().shape == (60000, 3, 32, 32)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    test = fm.FashionMNIST(split="test", image_size=None)
    assert len(test) == 10000 and test.images().shape == (10000, 3, 28, 28)
    assert int(test.labels.min()) == 0 and int(test.labels.max()) == 9
    for i in (0, 1, 9999):
        item = test[i]
        noun = fm.CAPTION_NOUNS[item.meta["label"]]
        assert item.meta["class_name"] == fm.CLASS_NAMES[item.meta["label"]]
        assert item.captions and all(noun in c for c in item.captions)
    # The garments are bright on a dark background: corners are mostly black.
    assert test.images()[:, :, 0, 0].float().mean() < 10
