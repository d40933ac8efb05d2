"""LastCheckpoint: last.ckpt every epoch, a hard link to the best checkpoint when that was just written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from converge.training import checkpoints
from converge.training.checkpoint_io import read_checkpoint
from converge.training.checkpoints import LastCheckpoint

SCORES = [1.0, 3.0, 2.0]  # val/score by epoch (mode max): the best improves at epochs 0 and 1, not at 2


class Scripted(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/score", SCORES[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Watch(pl.Callback):
    """After each epoch's checkpoints (seen from the next epoch's start, and at the end): whether last.ckpt shares
    its file with the best checkpoint, and the bytes of every checkpoint file."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.linked, self.digests = folder, [], []

    def _look(self) -> None:
        last = self.folder / "last.ckpt"
        best = [p for p in self.folder.glob("best*.ckpt")]
        self.linked.append(any(os.path.samefile(last, p) for p in best))
        self.digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in best})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch:
            self._look()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._look()


def _fit(folder: Path, ckpt_path: str | None = None, epochs: int = len(SCORES)) -> tuple[pl.Trainer, Watch]:
    data = TensorDataset(torch.randn(16, 4))
    best = ModelCheckpoint(dirpath=folder, filename="best-{epoch}", monitor="val/score", mode="max", save_top_k=1)
    watch = Watch(folder)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[watch, best, LastCheckpoint(dirpath=folder)])
    trainer.fit(Scripted(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), ckpt_path=ckpt_path,
                weights_only=True)
    return trainer, watch


def test_last_is_linked_to_the_best_of_its_epoch_and_written_otherwise(tmp_path: Path) -> None:
    trainer, watch = _fit(tmp_path)
    assert watch.linked == [True, True, False]  # epoch 2 did not improve: last.ckpt is a file of its own
    assert watch.digests[1] == watch.digests[2]  # writing last.ckpt again left the best checkpoint's bytes alone
    last = read_checkpoint(tmp_path / "last.ckpt")
    assert last["epoch"] == 2 and read_checkpoint(tmp_path / "best-epoch=1.ckpt")["epoch"] == 1
    weights = trainer.lightning_module.state_dict()
    assert all(torch.equal(last["state_dict"][name], value) for name, value in weights.items())
    (state,) = (value for key, value in last["callbacks"].items() if key.startswith("LastCheckpoint"))
    assert state["best_model_path"] == str(tmp_path / "last.ckpt")
    assert not list(tmp_path.glob(".*"))  # no temporary link left behind


def test_a_linked_last_checkpoint_records_its_own_path_and_resumes(tmp_path: Path) -> None:
    _fit(tmp_path / "first", epochs=2)  # ends on an improving epoch: last.ckpt is the best checkpoint's file
    last = tmp_path / "first" / "last.ckpt"
    assert os.path.samefile(last, tmp_path / "first" / "best-epoch=1.ckpt")
    (state,) = (value for key, value in read_checkpoint(last)["callbacks"].items()
                if key.startswith("LastCheckpoint"))
    assert state["best_model_path"] == str(last)
    trainer, _ = _fit(tmp_path / "resumed", ckpt_path=str(last))
    assert trainer.current_epoch == len(SCORES) and read_checkpoint(tmp_path / "resumed" / "last.ckpt")["epoch"] == 2


def test_without_hard_links_last_is_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise OSError("no hard links on this filesystem")

    monkeypatch.setattr(checkpoints.os, "link", refuse)
    _, watch = _fit(tmp_path, epochs=2)
    assert watch.linked == [False, False]
    assert (tmp_path / "last.ckpt").read_bytes() == (tmp_path / "best-epoch=1.ckpt").read_bytes()


def test_last_is_always_the_one_file_in_a_folder_that_has_one(tmp_path: Path) -> None:
    """A run going on in a folder that already holds last.ckpt overwrites it: `ckpt_path=last` finds no
    last-v1.ckpt (ModelCheckpoint's version counter would have written one)."""
    _fit(tmp_path, epochs=1)
    _fit(tmp_path, epochs=2)  # a new trainer, not resumed: its LastCheckpoint knows nothing of the file
    assert [path.name for path in tmp_path.glob("last*.ckpt")] == ["last.ckpt"]
    assert read_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
