"""LastCheckpoint: last.ckpt every epoch, one file of its own, what `ckpt_path=last` resumes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_doubles import ScriptedScore
from torch.utils.data import DataLoader, TensorDataset

from converge.training.checkpoint_io import read_checkpoint
from converge.training.checkpoints import LastCheckpoint

SCORES = [1.0, 3.0, 2.0]  # val/score by epoch (mode max): the best improves at epochs 0 and 1, not at 2


class Watch(pl.Callback):
    """After each epoch's checkpoints (seen from the next epoch's start, and at the end): last.ckpt's epoch and
    links, and the bytes of every best checkpoint file."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.last, self.digests = folder, [], []

    def _look(self) -> None:
        last = self.folder / "last.ckpt"
        self.last.append((read_checkpoint(last)["epoch"], os.stat(last).st_nlink))
        self.digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.folder.glob("best*")})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (self.folder / "last.ckpt").exists():  # not yet in the first epoch, nor in a resume's new folder
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
    loader = DataLoader(data, batch_size=8)
    trainer.fit(ScriptedScore(SCORES), loader, loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer, watch


def test_last_is_written_every_epoch_as_a_file_of_its_own(tmp_path: Path) -> None:
    trainer, watch = _fit(tmp_path)
    assert watch.last == [(0, 1), (1, 1), (2, 1)]  # the latest epoch, never a link to the best checkpoint
    assert watch.digests[1] == watch.digests[2]  # writing last.ckpt again left the best checkpoint's bytes alone
    last = read_checkpoint(tmp_path / "last.ckpt")
    assert read_checkpoint(tmp_path / "best-epoch=1.ckpt")["epoch"] == 1
    weights = trainer.lightning_module.state_dict()
    assert all(torch.equal(last["state_dict"][name], value) for name, value in weights.items())
    (state,) = (value for key, value in last["callbacks"].items() if key.startswith("LastCheckpoint"))
    assert state["best_model_path"] == str(tmp_path / "last.ckpt")
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_last_checkpoint_of_an_improving_epoch_resumes(tmp_path: Path) -> None:
    _fit(tmp_path / "first", epochs=2)  # ends on an improving epoch: the best checkpoint was written just before
    trainer, _ = _fit(tmp_path / "resumed", ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    assert trainer.current_epoch == len(SCORES) and read_checkpoint(tmp_path / "resumed" / "last.ckpt")["epoch"] == 2


def test_last_is_always_the_one_file_in_a_folder_that_has_one(tmp_path: Path) -> None:
    """A run going on in a folder that already holds last.ckpt overwrites it: `ckpt_path=last` finds no
    last-v1.ckpt (ModelCheckpoint's version counter would have written one)."""
    _fit(tmp_path, epochs=1)
    _fit(tmp_path, epochs=2)  # a new trainer, not resumed: its LastCheckpoint knows nothing of the file
    assert [path.name for path in tmp_path.glob("last*.ckpt")] == ["last.ckpt"]
    assert read_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
