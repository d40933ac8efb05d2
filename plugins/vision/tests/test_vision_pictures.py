"""The vision plugin's TensorBoard pictures, from a real two-epoch digits run: the confusion matrix
and the predicted validation samples, read back with TensorBoard's own event reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converge.testing import build_datamodule, check_confusion_matrix, load_task, read_events, train_run

# 16 steps: enough for some of the pictured predictions to be right and some wrong.
TINY = ["experiment=vision/digits", "trainer.max_epochs=2", "+trainer.limit_train_batches=8",
        "~callbacks.progress_bar", "~callbacks.model_summary", "callbacks.dashboards.every_n_epochs=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("pictures") / "digits"
    cfg = train_run(TINY, run_dir)
    return {"cfg": cfg, "dir": run_dir, "events": read_events(run_dir)}


def test_confusion_matrix_counts_the_validation_split_the_trainer_scored(run: dict) -> None:
    data = build_datamodule(run["cfg"].data)
    check_confusion_matrix(run["events"], data.spec()["class_names"], len(data.val_dataloader().dataset))
    assert len(run["events"].Images("val/confusion_matrix")) == 2  # every epoch, once per weights
    assert run["events"].Images("val/confusion_matrix")[-1].width == 400


def test_predicted_samples_show_first_validation_images_coloured_by_correctness(run: dict) -> None:
    last = run["events"].Images("val/predictions")[-1]
    sheet = np.asarray(Image.open(io.BytesIO(last.encoded_image_string)).convert("RGB")).astype(int)
    assert sheet.shape == (2 * 126, 8 * 100, 3)  # 16 images: 2 rows of 8 tiles with their captions
    task = load_task(Path(run["dir"]) / "checkpoints" / "last.ckpt")  # the weights the picture was drawn with
    images, labels = next(iter(build_datamodule(run["cfg"].data).val_dataloader()))
    with torch.no_grad():
        right = (task.eval()(images[:16]).argmax(dim=1) == labels[:16]).tolist()
    assert 0 < sum(right) < 16, "the test needs right and wrong predictions"
    for k, correct in enumerate(right):
        left, top = (k % 8) * 100, (k // 8) * 126
        caption = sheet[top + 96:top + 110, left:left + 100].reshape(-1, 3)  # the "pred ..." line
        ink = caption[caption.sum(axis=1) < 600]
        assert len(ink), f"tile {k} has no caption"
        greener = (ink[:, 1] - ink[:, 0]).mean() > 0
        assert greener == correct, f"tile {k}: predicted {'right' if correct else 'wrong'}"

