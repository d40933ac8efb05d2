"""The text plugin's TensorBoard picture: the confusion matrix of a real run on a slice of Reuters R8,
checked against the validation split and the accuracy the trainer logged."""

from __future__ import annotations

from pathlib import Path

from converge.testing import build_datamodule, check_confusion_matrix, read_events, train_run

SLICE = ["data=text/r8", "data.max_docs=160", "data.tokenizer.max_vocab=3000", "data.batch_size=32"]


def test_confusion_matrix_of_r8_names_its_classes_and_counts_the_validation_split(tmp_path: Path) -> None:
    cfg = train_run([*SLICE, "model=text/fasttext", "data.tokenizer.bigram_buckets=2000", "model.net.dim=16",
                   "trainer.max_epochs=2", "~callbacks.progress_bar", "~callbacks.model_summary",
                   "callbacks.dashboards.every_n_epochs=2"], tmp_path / "run")
    events = read_events(tmp_path / "run")
    data = build_datamodule(cfg.data)
    check_confusion_matrix(events, data.spec()["class_names"], len(data.val_dataloader().dataset))
    (image,) = events.Images("val/confusion_matrix")  # epoch 2 only, not again when fitting ends
    assert (image.width, image.height) == (400, 400)  # 8 classes of 50 pixels
