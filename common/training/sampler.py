"""A resumable, sharded sampler with torch's DistributedSampler order.

pysot trains with `DistributedSampler(dataset)` and never calls `set_epoch`: the whole run is one pass over a
dataset of VIDEOS_PER_EPOCH x EPOCH indices, shuffled once with seed 0, and rank r takes every world-th index
starting at r. This sampler yields exactly that order, and can start at any position so a resumed run continues
with the very batches an uninterrupted run would have drawn (torch's sampler can only restart from the top).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    """Indices `perm[rank::world]` (perm = randperm(n) seeded like DistributedSampler at epoch 0), padded by
    wrapping around as DistributedSampler pads, starting at this rank's `start` position."""

    def __init__(self, length: int, *, rank: int, world_size: int, seed: int = 0, shuffle: bool = True,
                 start: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self.per_rank = -(-length // world_size)  # ceil, as DistributedSampler(drop_last=False)

    def order(self) -> torch.Tensor:
        """This rank's whole index sequence (before `start` is applied)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # DistributedSampler: seed + epoch, and the epoch stays 0 upstream
            perm = torch.randperm(self.length, generator=g)
        else:
            perm = torch.arange(self.length)
        total = self.per_rank * self.world_size
        if total > self.length:  # pad with the head of the permutation
            perm = torch.cat([perm, perm[: total - self.length]])
        return perm[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
