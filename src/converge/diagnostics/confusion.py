"""The confusion matrix of a classification task, for TensorBoard: one implementation every
classification plugin calls from its `log_pictures` hook.

The picture is drawn with numpy alone (no plotting library in the core): rows are true classes,
columns predicted ones, so it carries no text; the label of each row and its recall go next to
it in the TEXT tab, under the same tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from converge.diagnostics.dashboards import validation_predictions

if TYPE_CHECKING:
    from converge.task import TaskModule

_WHITE = np.array([255.0, 255.0, 255.0])
_CORRECT = np.array([8.0, 69.0, 148.0])  # the diagonal: blue
_WRONG = np.array([203.0, 24.0, 29.0])  # everything else: red
_GRID = np.array([200, 200, 200], dtype=np.uint8)


def validation_confusion(task: TaskModule, num_classes: int) -> torch.Tensor | None:
    """Counts (true class, predicted class) over the validation batches, summed over DDP ranks by
    torchmetrics; None when there is no validation data."""
    metric = MulticlassConfusionMatrix(num_classes=num_classes).to(task.device)
    batches = 0
    for _, outputs, target in validation_predictions(task):
        metric.update(outputs, target)
        batches += 1
    return metric.compute() if batches else None


def confusion_image(counts: np.ndarray, width: int = 400) -> np.ndarray:
    """An RGB picture (height, width, 3; uint8) of a confusion matrix.

    Each cell is coloured by its share of its row, so a rare class reads like a common one:
    blue on the diagonal (recall), red elsewhere (which class it is mistaken for). The share is
    square-root scaled so that a 2% confusion stays visible next to a 98% diagonal.
    """
    counts = np.asarray(counts, dtype=np.float64)
    share = np.sqrt(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0))
    classes = len(counts)
    ink = np.where(np.eye(classes, dtype=bool)[..., None], _CORRECT, _WRONG)
    cells = _WHITE + share[..., None] * (ink - _WHITE)
    cell = max(1, width // classes)
    image = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1).round().astype(np.uint8)
    if cell >= 6:  # grid lines only where they leave room for the colour
        image[::cell, :], image[:, ::cell] = _GRID, _GRID
        image[-1, :], image[:, -1] = _GRID, _GRID
    return image


def confusion_table(counts: np.ndarray, labels: Sequence[str]) -> str:
    """Markdown: per true class (in the picture's row order) its samples, recall and the class it is
    most often mistaken for."""
    counts = np.asarray(counts, dtype=np.int64)
    lines = ["| row | true class | samples | recall | most often predicted instead |", "|---:|---|---:|---:|---|"]
    for row, label in enumerate(labels):
        samples = int(counts[row].sum())
        errors = counts[row].copy()
        errors[row] = 0
        worst = int(errors.argmax())
        recall = f"{counts[row, row] / samples:.3f}" if samples else "-"
        mistaken = f"{_cell(labels[worst])} ({errors[worst]})" if errors[worst] else "-"
        lines.append(f"| {row} | {_cell(label)} | {samples} | {recall} | {mistaken} |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def log_confusion_matrix(writer: Any, task: TaskModule, labels: Sequence[str], step: int,
                         tag: str = "val/confusion_matrix") -> None:
    """The task's confusion matrix on its validation batches: the picture (IMAGES tab) and its
    legend with recalls (TEXT tab), both under `tag`."""
    counts = validation_confusion(task, len(labels))
    if counts is None:
        return
    counts = counts.cpu().numpy()
    writer.add_image(tag, confusion_image(counts), step, dataformats="HWC")
    writer.add_text(tag, confusion_table(counts, labels), step)
