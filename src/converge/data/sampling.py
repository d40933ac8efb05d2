"""Which samples each rank reads, in which order: training by (seed, epoch), evaluation each sample once.

A run killed mid-epoch and resumed from its last checkpoint starts epoch N in a fresh
process: whatever the global RNG had drawn before is gone. So the training sampler
permutes by (seed, epoch), and hands every draw a seed of its own that a
`SeededDataset` runs its random transforms under. The resumed epoch then sees the
same samples, in the same order, with the same augmentations as an uninterrupted
run, whatever the number of DataLoader workers (persistent or not).

Evaluation reads in order, and under DDP each sample on one rank only (`ShardSampler`), so that
validation metrics count every sample once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class SeededDataset(Dataset, ABC):
    """A map-style dataset whose random transforms draw from a per-sample seed.

    `dataset[(index, seed)]` runs `sample(index)` with torch's global RNG seeded by `seed`
    (forked, so the caller's stream is untouched); `dataset[index]` runs it as it is
    (validation and test, where nothing is random). Transforms must draw from torch's RNG,
    as torchvision's do.
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def sample(self, index: int) -> Any:
        """The sample at `index`, augmented if this dataset augments."""

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.sample(key)
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU one only: torch.manual_seed costs ~20x more
            return self.sample(index)


# Length-grouped batches (`EpochSampler(lengths=...)`) are cut from runs of this many batches of the shuffled
# order, sorted by length: transformers' LengthGroupedSampler's 50, random enough and padding little.
GROUP_BATCHES = 50


class EpochSampler(DistributedSampler):
    """Shuffles by (seed, epoch); yields `(index, sample seed)` for a `SeededDataset`, plain indices otherwise.

    A DistributedSampler, so that under DDP Lightning keeps it (it shards by rank itself,
    like the sampler Lightning would put in its place) and calls `set_epoch` every epoch.
    `epoch` is where a resumed run starts: Lightning creates the first iterator before it
    sets the epoch.

    Given the samples' `lengths` and the `batch_size`, each batch holds samples of similar lengths (a batch is
    padded to its longest): each run of `GROUP_BATCHES` batches of the shuffled order is sorted by length and cut
    into batches, and the full batches are shuffled (by seed and epoch; a short last batch stays last, so the
    DataLoader's batches are these).
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int = 0, lengths: Sequence[int] | None = None,
                 batch_size: int = 1) -> None:
        super().__init__(dataset, *world_and_rank(), shuffle=True, seed=seed)
        self.seeded = isinstance(dataset, SeededDataset)
        self.lengths, self.batch_size = lengths, batch_size
        self.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())
        if self.lengths is not None:
            indices = self._grouped_by_length(indices)
        if not self.seeded:
            return iter(indices)
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(0, 2**63 - 1, size=len(self.dataset))
        return zip(indices, seeds[indices].tolist(), strict=True)  # one conversion, not a numpy scalar per sample

    def _grouped_by_length(self, indices: list[int]) -> list[int]:
        assert self.lengths is not None
        size, group = self.batch_size, self.batch_size * GROUP_BATCHES
        batches = []
        for start in range(0, len(indices), group):
            run = sorted(indices[start:start + group], key=self.lengths.__getitem__, reverse=True)
            batches += [run[first:first + size] for first in range(0, len(run), size)]
        last = [batches.pop()] if batches and len(batches[-1]) < size else []
        order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(batches))
        return [index for batch in [*(batches[i] for i in order), *last] for index in batch]


class ShardSampler(DistributedSampler):
    """Evaluation order: rank r of a world of w reads samples r, r + w, r + 2w, ... in order, each once.

    Lightning's own DistributedSampler pads the shards to one length with repeated samples, which a
    validation metric or confusion matrix then counts twice. The shards here differ by one sample at
    most; only when that would leave the ranks different numbers of batches (which a sharded model,
    FSDP, cannot run: each forward is a collective of all ranks) does it pad as Lightning would.
    A DistributedSampler, so that under DDP Lightning keeps it rather than putting its own in place;
    `world` is (world size, rank), by default the running process group's.
    """

    def __init__(self, dataset: Dataset, batch_size: int, world: tuple[int, int] | None = None) -> None:
        super().__init__(dataset, *(world or world_and_rank()), shuffle=False)
        shards = {len(range(rank, len(dataset), self.num_replicas)) for rank in range(self.num_replicas)}
        if len({-(-shard // batch_size) for shard in shards}) == 1:  # the same number of batches on every rank
            self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
            self.total_size = len(dataset)  # DistributedSampler pads up to total_size: nothing to pad


def world_and_rank() -> tuple[int, int]:
    """(world size, rank) of the running process group; (1, 0) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0
