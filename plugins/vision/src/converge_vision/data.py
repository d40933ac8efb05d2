"""The image classification data module: split, augment, batch; and the spec the task is built from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import numpy as np
import torch
from hydra.utils import instantiate
from pydantic import Field
from torchvision.transforms import v2

from converge import ConfigError, DataModule, SeededDataset, check_folds, stratified_split, validation_split
from converge_vision.sources import ImageSet

_STATS_SAMPLE = 2000  # images used for the normalisation statistics (all of them for small sets)

# A share of the data held out for a split: a value outside it is refused before anything runs.
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Subset(SeededDataset):
    """Images at `indices` of `source`; random transforms draw from the sampler's per-sample seed."""

    def __init__(self, source: ImageSet, indices: np.ndarray, transform: Callable | None = None) -> None:
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, position: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[position])
        image = self.source.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.source.labels[index])


class ImageClassificationData(DataModule):
    """Images from `source`, split into train/val/test with fixed, stratified, seeded splits.

    The test split is the source's own when it has one, else `test_fraction` of
    every class; validation is `val_fraction` of the training split, or, for cross-validation
    (`num_folds` K), fold `fold` of a stratified K-fold partition of it (test never changes).
    Augmentations are torchvision transforms v2 configs applied to training images only.
    `label_fraction` < 1 keeps that stratified fraction of the training images (validation and test unchanged):
    a small labelled set, as transfer learning meets it.
    """

    def __init__(self, source: Any, test_fraction: Fraction = 0.2, val_fraction: Fraction = 0.1, split_seed: int = 0,
                 train_transforms: Sequence[Any] = (), num_folds: int | None = None, fold: int = 0,
                 label_fraction: float = 1.0, **loader: Any) -> None:
        super().__init__(**loader)
        if not 0.0 < label_fraction <= 1.0:
            raise ConfigError(f"data.label_fraction must be in (0, 1], got {label_fraction}")
        self.label_fraction = label_fraction
        if not hasattr(source, "load"):
            raise ConfigError(f"data.source must build an image source (with .load()), got {type(source).__name__}")
        check_folds(num_folds, fold)
        self.num_folds, self.fold = num_folds, fold
        self.source = source
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed
        transforms = [instantiate(t) if isinstance(t, dict) else t for t in train_transforms]
        self.train_transform = v2.Compose(transforms) if transforms else None
        self._splits: dict[str, tuple[ImageSet, np.ndarray]] | None = None

    def _split(self) -> dict[str, tuple[ImageSet, np.ndarray]]:
        if self._splits is None:
            images = self.source.load()
            if images.test is not None:
                train_idx, test = np.arange(len(images.labels)), (images.test, np.arange(len(images.test.labels)))
            else:
                train_idx, test_idx = stratified_split(images.labels, self.test_fraction, self.split_seed)
                test = (images, test_idx)
            labels = images.labels[train_idx]
            keep, val = validation_split(labels, self.val_fraction, self.num_folds, self.fold, self.split_seed + 1)
            if self.label_fraction < 1.0:
                _, labelled = stratified_split(labels[keep], self.label_fraction, self.split_seed + 2)
                keep = keep[labelled]
            self._splits = {"train": (images, train_idx[keep]), "val": (images, train_idx[val]), "test": test}
        return self._splits

    def spec(self) -> dict[str, Any]:
        images, train_idx = self._split()["train"]
        sample = train_idx[:: max(1, len(train_idx) // _STATS_SAMPLE)]
        stack = torch.stack([images.load(int(i)) for i in sample])
        return {
            "class_names": images.class_names,
            "num_classes": len(images.class_names),
            "channels": int(stack.shape[1]),
            "image_size": [int(stack.shape[2]), int(stack.shape[3])],
            "mean": stack.mean(dim=(0, 2, 3)).tolist(),
            "std": stack.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
            "resize": bool(images.files),  # files were resized to image_size: serving resizes too
        }

    def setup(self, stage: str | None = None) -> None:
        self._split()

    def _dataset(self, split: str, transform: Callable | None = None) -> _Subset:
        images, indices = self._split()[split]
        return _Subset(images, indices, transform)

    def train_dataloader(self):
        return self.loader(self._dataset("train", self.train_transform), train=True)

    def val_dataloader(self):
        return self.loader(self._dataset("val"), train=False)

    def test_dataloader(self):
        return self.loader(self._dataset("test"), train=False)
