"""DataModule: the LightningDataModule base of plugin data sets.

Beyond Lightning's hooks it answers `spec()`: the plain-JSON facts a task is
built from and an exported model is served with (class names, input shape,
normalisation, vocabulary...). The app asks for it before training, so a data
module computes it from the training split alone and identically on every rank.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from pydantic import NonNegativeInt, PositiveInt  # ranges `converge train` checks before anything runs
from torch.utils.data import DataLoader, Dataset

from converge.data.sampling import EpochSampler, ShardSampler, run_seed


class DataModule(pl.LightningDataModule, ABC):
    def __init__(self, batch_size: PositiveInt = 64, eval_batch_size: PositiveInt | None = None,
                 num_workers: NonNegativeInt = 0, pin_memory: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Plain-JSON facts about the data that the task and the exported model need."""

    def loader(self, dataset: Dataset, train: bool, collate_fn: Callable[[list], Any] | None = None) -> DataLoader:
        """A DataLoader over `dataset`; for training, in an order (and with augmentations, for a
        `SeededDataset`) drawn from (seed, epoch), so a resumed run trains exactly like an uninterrupted one;
        for evaluation, in order, each sample read once across DDP ranks."""
        trainer = getattr(self, "trainer", None)
        batch_size = self.batch_size if train else self.eval_batch_size
        sampler = (EpochSampler(dataset, run_seed(), trainer.current_epoch if trainer else 0) if train
                   else ShardSampler(dataset, batch_size))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            generator=torch.Generator().manual_seed(run_seed()),  # worker seeds: not from the global stream
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )
