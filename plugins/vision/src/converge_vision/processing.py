"""Serving images: files in, the model's input rows out. numpy and Pillow only (no torch).

The checks mirror training: a model trained on fixed-size images (digits,
MNIST) takes images of exactly that size and channel count, and any other is
an error naming the file; a model trained on an image folder (which resized
every image) resizes and converts the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from converge import DataError, Preprocessor, Request

_MODES = {1: "L", 3: "RGB"}


class ImagePreprocessor(Preprocessor):
    """PNG/JPEG/... files or .npy arrays ((H, W), (C, H, W) or (H, W, C); uint8 0-255 or float 0-1)."""

    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        for path in paths:
            yield Request(source=path, inputs={"images": self.read(Path(path))[None]})

    def read(self, path: Path) -> np.ndarray:
        channels, (height, width) = self.spec["channels"], self.spec["image_size"]
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        array = self._from_npy(path) if path.suffix.lower() == ".npy" else self._from_image(path)
        if array.shape != (channels, height, width):
            raise DataError(f"{path}: image is {_describe(array.shape)}, the model takes "
                            f"{_describe((channels, height, width))}")
        return array

    def _from_image(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        channels, (height, width) = self.spec["channels"], self.spec["image_size"]
        try:
            with Image.open(path) as image:
                if self.spec.get("resize"):
                    image = image.convert(_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
                elif image.mode != _MODES[channels]:
                    raise DataError(f"{path}: image mode {image.mode}, the model takes {_MODES[channels]} "
                                    f"({channels} channel{'s' if channels > 1 else ''})")
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{path}: cannot read this image ({error})") from error
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def _from_npy(self, path: Path) -> np.ndarray:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: not a readable .npy array ({error})") from error
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
            array = array.transpose(2, 0, 1)
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{path}: array of {array.dtype}; expected uint8 (0-255) or float (0-1)")
        return array.astype(np.float32)


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) != 3:
        return f"an array of shape {list(shape)}"
    channels, height, width = shape
    return f"{width}x{height} with {channels} channel(s)"
