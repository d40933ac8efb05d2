"""DataModule: the LightningDataModule base of plugin data sets.

Beyond Lightning's hooks it answers `spec()`: the plain-JSON facts a task is
built from and an exported model is served with (class names, input shape,
normalisation, vocabulary...). The app asks for it before training, so a data
module computes it from the training split alone and identically on every rank.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from pydantic import NonNegativeInt, PositiveInt  # ranges `converge train` checks before anything runs
from torch.utils.data import DataLoader, Dataset, default_collate

from converge.data.sampling import EpochSampler, ShardSampler
from converge.errors import ConfigError


class DataModule(pl.LightningDataModule, ABC):
    """Base of plugin data sets: Lightning's hooks (`setup`, `*_dataloader`), plus `spec()`, and `loader()` for
    the dataloaders.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation and test batch size (default: `batch_size`).
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader's `pin_memory`.
        group_by_length: training batches of samples of similar lengths, for a training set whose samples have
            them (a `lengths` attribute: a text's tokens): a batch padded to its longest then costs less. Shuffled
            still, by seed and epoch (`EpochSampler`).
    """

    sampling_seed: int = 0  # the run's `seed`, set by converge when it builds the data module: see `loader`

    def __init__(self, batch_size: PositiveInt = 64, eval_batch_size: PositiveInt | None = None,
                 num_workers: NonNegativeInt = 0, pin_memory: bool = False, group_by_length: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.group_by_length = group_by_length

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The facts about the data the task is built from, asked before training, so computed from the training
        split alone and identically on every rank. Saved in checkpoints and, through the task's
        `serving_state`, in export bundles.

        Returns:
            Plain JSON: class names, input shape, normalisation, vocabulary, id maps...

        Raises:
            DataError: data that is missing or malformed, naming the file.

        Example::

            def spec(self):
                train_x = self._load()["train"].tensors[0]
                return {"features": self.features, "mean": train_x.mean(0).tolist()}
        """

    def loader(self, dataset: Dataset, train: bool, collate_fn: Callable[[list], Any] | None = None) -> DataLoader:
        """The DataLoader a plugin's `*_dataloader` hooks return. Training reads in an order (and, for a
        `SeededDataset`, with augmentations) drawn from (seed, epoch), so a resumed run trains exactly like an
        uninterrupted one; evaluation reads in order, each sample once across DDP ranks.

        A dataset may batch itself: torch's DataLoader calls its `__getitems__(keys)` with a whole batch of
        keys (indices, or `(index, seed)` pairs for a `SeededDataset`), and the batch it returns, a tuple, dict
        or tensor (not a list), is passed through as it is: one gather per batch over whole tensors, where
        `__getitem__` and collate cost a Python call per sample.

        Args:
            dataset: a map-style dataset.
            train: training (shuffled by seed and epoch, `batch_size`) or evaluation (`eval_batch_size`).
            collate_fn: DataLoader's, to batch samples (default: stack tensors; a batch that is not a list of
                samples passes through).

        Returns:
            A `torch.utils.data.DataLoader`.

        Example::

            def train_dataloader(self):
                return self.loader(self.splits["train"], train=True)
        """
        trainer = getattr(self, "trainer", None)
        batch_size = self.batch_size if train else self.eval_batch_size
        sampler = (EpochSampler(dataset, self.sampling_seed, trainer.current_epoch if trainer else 0,
                                self._lengths(dataset), batch_size) if train
                   else ShardSampler(dataset, batch_size))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn or collate_unless_batched,
            generator=torch.Generator().manual_seed(self.sampling_seed),  # worker seeds: not from the global stream
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def _lengths(self, dataset: Dataset) -> Sequence[int] | None:
        """The training samples' lengths when batches group them (`group_by_length`), else None."""
        if not self.group_by_length:
            return None
        if not hasattr(dataset, "lengths"):
            raise ConfigError(f"data.group_by_length=true: {type(dataset).__name__}'s samples have no lengths to "
                              "group by (a `lengths` attribute); set data.group_by_length=false")
        return dataset.lengths


def collate_unless_batched(data: Any) -> Any:
    """Torch's default collate of a list of samples; a batch a dataset's `__getitems__` made itself passes."""
    return default_collate(data) if isinstance(data, list) else data
