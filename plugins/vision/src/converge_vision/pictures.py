"""Predictions on a few validation images, as one TensorBoard picture: each image with its
predicted and true class, green when right and red when wrong. The same first images of the
(unshuffled) validation split every time, so the steps of the picture show the model learning them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from converge import TaskModule, validation_predictions

_RIGHT, _WRONG = (0, 120, 0), (200, 0, 0)


def prediction_grid(images: torch.Tensor, predicted: Sequence[str], true: Sequence[str], columns: int = 8,
                    tile: int = 96) -> np.ndarray:
    """An RGB picture (height, width, 3; uint8): images (N, C, H, W, in [0, 1]) scaled up without
    smoothing to `tile` pixels, each above a two-line caption of its predicted and true class."""
    font = ImageFont.load_default(size=11)
    width, height = tile + 4, tile + 30  # a margin between images, and room for the caption
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (min(columns, len(images)) * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    for k, (image, guess, answer) in enumerate(zip(pixels, predicted, true, strict=True)):
        picture = image[:3].permute(1, 2, 0).numpy() if image.shape[0] >= 3 else image[0].numpy()
        scale = tile / max(picture.shape[:2])
        shown = Image.fromarray(picture).convert("RGB").resize(
            (round(picture.shape[1] * scale), round(picture.shape[0] * scale)), Image.Resampling.NEAREST)
        left, top = (k % columns) * width + 2, (k // columns) * height
        sheet.paste(shown, (left, top))
        colour = _RIGHT if guess == answer else _WRONG
        draw.text((left + 3, top + tile + 1), f"pred {guess}"[:16], fill=colour, font=font)
        draw.text((left + 3, top + tile + 14), f"true {answer}"[:16], fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def log_predicted_samples(writer: Any, task: TaskModule, class_names: Sequence[str], step: int, count: int = 16,
                          tag: str = "val/predictions") -> None:
    """The first `count` validation images with what the task predicts for them."""
    images, predicted, true = [], [], []
    for (batch_images,), outputs, target in validation_predictions(task):
        images.append(batch_images)
        predicted += [class_names[i] for i in outputs.argmax(dim=1).tolist()]
        true += [class_names[i] for i in target.tolist()]
        if len(true) >= count:
            break
    if images:
        grid = prediction_grid(torch.cat(images)[:count], predicted[:count], true[:count])
        writer.add_image(tag, grid, step, dataformats="HWC")
