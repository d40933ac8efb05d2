"""Training order and random augmentation drawn from (seed, epoch), never from the global RNG stream.

A run killed mid-epoch and resumed from its last checkpoint starts epoch N in a fresh
process: whatever the global RNG had drawn before is gone. So the training sampler
permutes by (seed, epoch), and hands every draw a seed of its own that a
`SeededDataset` runs its random transforms under. The resumed epoch then sees the
same samples, in the same order, with the same augmentations as an uninterrupted
run, whatever the number of DataLoader workers (persistent or not).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def run_seed() -> int:
    """The run's seed as `seed_everything` published it (what Lightning's own DistributedSampler uses)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


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


class EpochSampler(DistributedSampler):
    """Shuffles by (seed, epoch); yields `(index, sample seed)` for a `SeededDataset`, plain indices otherwise.

    A DistributedSampler, so that under DDP Lightning keeps it (it shards by rank itself,
    like the sampler Lightning would put in its place) and calls `set_epoch` every epoch.
    `epoch` is where a resumed run starts: Lightning creates the first iterator before it
    sets the epoch.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int = 0) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if distributed else (1, 0)
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.seeded = isinstance(dataset, SeededDataset)
        self.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        indices = super().__iter__()
        if not self.seeded:
            return indices
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(0, 2**63 - 1, size=len(self.dataset))
        return ((index, int(seeds[index])) for index in indices)
