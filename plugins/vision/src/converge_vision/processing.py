"""Serving images: files in, the model's input rows out. numpy and Pillow only (no torch).

The checks mirror training: a model trained on fixed-size images (digits,
MNIST) takes images of exactly that size and channel count, and any other is
an error naming the file; a model trained on an image folder (which resized
every image) resizes and converts the same way.

`converge serve` takes an instance `{"pixels": [[...]]}` (an array as a .npy file holds
it: (H, W), (C, H, W) or (H, W, C), integers 0-255 or floats 0-1) or `{"image": "<base64
PNG/JPEG>"}`, read by the same code as a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from converge import DataError, LogRecord, Preprocessor, Request, json_field

_MODES = {1: "L", 3: "RGB"}


class ImagePreprocessor(Preprocessor):
    """PNG/JPEG/... files or .npy arrays ((H, W), (C, H, W) or (H, W, C); uint8 0-255 or float 0-1)."""

    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        for path in paths:
            yield Request(source=path, inputs={"images": self.read(Path(path))[None]})

    def read(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix.lower() == ".npy":
            return self._checked(self._from_array(_load_npy(path), str(path)), str(path))
        return self._checked(self._from_image(path, str(path)), str(path))

    def json_request(self, instance: Any, source: str) -> Request:
        if isinstance(instance, dict) and "image" in instance:
            name = f"{source}.image"
            try:
                data = base64.b64decode(json_field(instance, "image", str, source), validate=True)
            except (binascii.Error, ValueError) as error:
                raise DataError(f"{name}: not base64 ({error})") from error
            return Request(source, {"images": self._checked(self._from_image(io.BytesIO(data), name), name)[None]})
        name = f"{source}.pixels"
        try:
            array = np.asarray(json_field(instance, "pixels", list, source))
        except (ValueError, TypeError, RecursionError) as error:  # ragged or absurdly deep nesting
            raise DataError(f"{name}: not a rectangular array of numbers ({error})") from error
        if array.dtype.kind in "iu":
            if array.size and (array.min() < 0 or array.max() > 255):
                raise DataError(f"{name}: integer pixels must lie in 0-255")
            array = array.astype(np.uint8)
        elif array.dtype.kind != "f":
            raise DataError(f"{name}: expected numbers (integers 0-255 or floats 0-1), got {array.dtype}")
        return Request(source, {"images": self._checked(self._from_array(array, name), name)[None]})

    def drift_statistics(self, feeds: Mapping[str, np.ndarray], outputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"pixel_intensity": feeds["images"].reshape(-1), "predicted_class": outputs.argmax(axis=1)}

    def log_record(self, request: Request, answer: Mapping[str, Any]) -> LogRecord:
        """The image as the model saw it, a PNG under its predicted class (`data=vision/image_folder` reads it)."""
        from PIL import Image

        pixels = (request.inputs["images"][0] * 255).round().clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        return LogRecord(file=(f"{answer['label']}/{uuid.uuid4().hex}.png", encoded.getvalue()))

    def _checked(self, array: np.ndarray, source: str) -> np.ndarray:
        channels, (height, width) = self.spec["channels"], self.spec["image_size"]
        if array.shape != (channels, height, width):
            raise DataError(f"{source}: image is {_describe(array.shape)}, the model takes "
                            f"{_describe((channels, height, width))}")
        return array

    def _from_image(self, file: Path | IO[bytes], source: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        channels, (height, width) = self.spec["channels"], self.spec["image_size"]
        try:
            with Image.open(file) as image:
                if self.spec.get("resize"):
                    image = image.convert(_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
                elif image.mode != _MODES[channels]:
                    raise DataError(f"{source}: image mode {image.mode}, the model takes {_MODES[channels]} "
                                    f"({channels} channel{'s' if channels > 1 else ''})")
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise DataError(f"{source}: cannot read this image ({error})") from error
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    @staticmethod
    def _from_array(array: np.ndarray, source: str) -> np.ndarray:
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
            array = array.transpose(2, 0, 1)
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{source}: array of {array.dtype}; expected uint8 (0-255) or float (0-1)")
        return array.astype(np.float32)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from error


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) != 3:
        return f"an array of shape {list(shape)}"
    channels, height, width = shape
    return f"{width}x{height} with {channels} channel(s)"
