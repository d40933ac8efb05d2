"""Checks of a run's TensorBoard dashboards, for the tests of classification plugins (and yours):

    events = read_events(run_dir)
    check_confusion_matrix(events, spec["class_names"], validation_samples=len(val_dataset))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from converge.layout import TENSORBOARD_DIR


def read_events(run_dir: str | Path) -> EventAccumulator:
    """Every event of the run's tensorboard/ folder (no sampling of images, texts or layouts)."""
    events = EventAccumulator(str(Path(run_dir) / TENSORBOARD_DIR), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events


def check_confusion_matrix(events: EventAccumulator, class_names: Sequence[str], validation_samples: int,
                           tag: str = "val/confusion_matrix", accuracy: str = "val/acc") -> None:
    """The confusion matrix was drawn at the steps of the validation scores, and its latest table counts
    every validation sample once, names the classes in order, and agrees with the logged accuracy."""
    images = events.Images(tag)
    scored = [score.step for score in events.Scalars(accuracy)]
    assert images and {image.step for image in images} <= set(scored), (tag, [i.step for i in images], scored)
    assert len({image.step for image in images}) == len(images), "drawn twice for the same weights"
    table = events.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    assert [row[1].replace("\\|", "|") for row in rows] == list(class_names)
    samples = [int(row[2]) for row in rows]
    right = sum(round(float(row[3]) * count) for row, count in zip(rows, samples, strict=True) if count)
    assert sum(samples) == validation_samples
    latest = next(score.value for score in reversed(events.Scalars(accuracy)) if score.step == images[-1].step)
    assert abs(right / validation_samples - latest) < 1e-6, (right / validation_samples, latest)
