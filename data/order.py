"""The order in which one stream reads a shard set, and its exact position.

    order = ShardOrder(shard_sizes, seed, stream=s, streams=S)
    shard, item = order.next()
    order.state_dict() -> {"epoch", "pos"};  order.load_state_dict(state)

Every epoch is a fresh seeded shuffle, reproducible from (seed, epoch): a permutation of the
shards, then, inside each shard, a permutation of its items. The epoch's positions are dealt
round-robin to S streams; stream s reads positions s, s + S, s + 2S, ... So the S streams of a
run split every epoch between them, none reads an item another reads in that epoch, and the
union of their reads does not depend on how the streams are spread over ranks and workers.

A global permutation of every item would mix better but costs memory in the item count per
process (800 MB of int64 at 1e8 documents); this costs the largest shard's size. Shards that
each hold a random sample of the data (an encoder that shuffles its input writes them so) make
the two the same in distribution. With one shard and one stream the order is exactly
torch.randperm(n, seed * 100003 + epoch): the order every run before shard sets was trained on,
so their results hold.
"""

from __future__ import annotations

import bisect
import itertools

import torch

EPOCH_STRIDE = 100003  # seed * EPOCH_STRIDE + epoch seeds an epoch's shuffle
SHARD_STRIDE = 1_000_003  # added per shard, so shards of one epoch draw different permutations
SHARD_ORDER_SALT = 7_777_777  # the shards' own permutation, drawn only where there are 2+


def _randperm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class ShardOrder:
    """Positions (shard, item) of one stream over shards of the given sizes (module docstring)."""

    def __init__(self, sizes: list[int], seed: int, stream: int = 0, streams: int = 1) -> None:
        if not 0 <= stream < streams:
            raise ValueError(f"stream {stream} of {streams}: a stream is numbered 0 .. streams - 1")
        total = sum(sizes)
        if total == 0:
            raise ValueError("cannot sample from an empty set: prepare the data first (python -m data.prepare)")
        if total < streams:
            raise ValueError(f"{total} items cannot feed {streams} streams: give fewer streams or more data")
        self.sizes, self.seed, self.stream, self.streams = list(sizes), seed, stream, streams
        self.per_epoch = (total - stream + streams - 1) // streams  # positions stream, stream + S, ... < total
        self.epoch, self.pos = 0, 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        n = len(self.sizes)
        base = self.seed * EPOCH_STRIDE + self.epoch
        self._shards = _randperm(n, base + SHARD_ORDER_SALT).tolist() if n > 1 else [0]
        self._starts = list(itertools.accumulate((self.sizes[j] for j in self._shards), initial=0))
        self._cached: tuple[int, torch.Tensor] = (-1, torch.empty(0))

    def _within(self, shard: int) -> torch.Tensor:
        """The permutation of one shard's items this epoch."""
        if self._cached[0] != shard:
            base = self.seed * EPOCH_STRIDE + self.epoch + shard * SHARD_STRIDE
            self._cached = (shard, _randperm(self.sizes[shard], base))
        return self._cached[1]

    def next(self) -> tuple[int, int]:
        if self.pos == self.per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
            self._start_epoch()
        position = self.stream + self.pos * self.streams
        self.pos += 1
        k = bisect.bisect_right(self._starts, position) - 1
        shard = self._shards[k]
        offset = position - self._starts[k]
        return shard, int(self._within(shard)[offset])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._start_epoch()
