"""data/arrays.py and data/order.py: the shard sets the training stream reads, and the order
streams read them in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.arrays import ShardError, ShardSet, caption_arrays, shard_record, write_index, write_shard
from data.integrity import damage
from data.order import ShardOrder


def _text_set(directory, sizes=(5, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    stems = []
    for k, n in enumerate(sizes):
        lengths = rng.integers(1, 9, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = rng.integers(0, 1000, int(offsets[-1])).astype(np.int32)
        stems.append(f"{k:05d}")
        write_shard(directory, stems[-1], "text", {"tokens": tokens, "offsets": offsets})
    write_index(directory, stems, {"written_by": "test"})
    return ShardSet(directory)


def test_a_text_set_reads_back_every_document_memory_mapped(tmp_path):
    shards = _text_set(tmp_path)
    assert shards.kind == "text" and shards.sizes == [5, 3, 4] and len(list(shards.documents())) == 12
    assert isinstance(shards.shard(0).tokens, np.memmap)
    assert shards.verify() is None
    assert json.loads((tmp_path / "index.json").read_text())["count"] == 12


def test_an_image_set_keeps_each_images_captions(tmp_path):
    codes = np.arange(3 * 2 * 2, dtype=np.int16).reshape(3, 2, 2)
    caps = caption_arrays([[[1, 2], [3]], [[4, 5, 6]], [[7], [8], [9, 9]]])
    write_shard(tmp_path, "a", "codes", {"codes": codes, **caps})
    write_index(tmp_path, ["a"], {})
    image, captions = ShardSet(tmp_path).shard(0).item(2)
    assert image.tolist() == codes[2].tolist() and [c.tolist() for c in captions] == [[7], [8], [9, 9]]


def test_inconsistent_arrays_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="do not rise"):
        write_shard(tmp_path, "x", "text", {"tokens": np.zeros(10, np.int32), "offsets": np.array([0, 4, 9])})
    caps = caption_arrays([[[1]], [[2]]])
    with pytest.raises(ValueError, match="3 images but 2 caption lists"):
        write_shard(tmp_path, "x", "latents", {"latents": np.zeros((3, 4, 2, 2), np.float32), **caps})
    assert not list(tmp_path.iterdir())


def test_a_shard_without_its_record_is_to_do_and_blocks_the_index(tmp_path):
    _text_set(tmp_path)
    (tmp_path / "00001.json").unlink()
    assert shard_record(tmp_path, "00001") is None and shard_record(tmp_path, "00000") is not None
    with pytest.raises(ShardError, match="00001 is not written whole"):
        write_index(tmp_path, ["00000", "00001"], {})


def test_a_damaged_shard_is_named(tmp_path):
    shards = _text_set(tmp_path)
    path = tmp_path / "00002.tokens.npy"
    path.write_bytes(path.read_bytes()[:-8])
    assert "cut short" in damage(path)
    assert shards.verify() == str(path)
    with pytest.raises(ShardError, match="00002.tokens.npy is unreadable"):
        ShardSet(tmp_path).shard(2)
    (tmp_path / "index.json").unlink()
    with pytest.raises(ShardError, match="index.json is missing"):
        ShardSet(tmp_path)


def test_one_shard_one_stream_is_the_order_every_earlier_run_trained_on():
    # torch.randperm(n, seed * 100003 + epoch), the sampler the committed runs used
    order = ShardOrder([7], seed=3)
    for epoch in range(3):
        expected = torch.randperm(7, generator=torch.Generator().manual_seed(3 * 100003 + epoch)).tolist()
        assert [order.next() for _ in range(7)] == [(0, i) for i in expected]


def test_streams_split_each_epoch_and_together_read_every_item_once():
    sizes = [5, 3, 4, 6]
    seen = []
    for s in range(3):
        order = ShardOrder(sizes, seed=1, stream=s, streams=3)
        seen += [order.next() for _ in range(order.per_epoch)]
    assert sorted(seen) == [(k, i) for k, n in enumerate(sizes) for i in range(n)]
    one = ShardOrder(sizes, seed=1)
    epochs = [[one.next() for _ in range(18)] for _ in range(2)]
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])


def test_an_order_resumes_exactly_across_epochs():
    a = ShardOrder([5, 3, 4], seed=2, stream=1, streams=2)
    for _ in range(13):
        a.next()
    b = ShardOrder([5, 3, 4], seed=2, stream=1, streams=2)
    b.load_state_dict(a.state_dict())
    assert [a.next() for _ in range(20)] == [b.next() for _ in range(20)]


def test_bad_orders_are_one_line_errors():
    with pytest.raises(ValueError, match="empty"):
        ShardOrder([0], 0)
    with pytest.raises(ValueError, match="cannot feed 4 streams"):
        ShardOrder([2, 1], 0, streams=4)
    with pytest.raises(ValueError, match="stream 2 of 2"):
        ShardOrder([5], 0, stream=2, streams=2)
