"""The checkpoints of a run: the one it keeps (tested, exported, reported), and last.ckpt every epoch
without serialising the same state twice.

`KeptCheckpoint` keeps the epoch with the best monitored score, or the last epoch: a fixed schedule
(a cosine decay to zero, a convex objective) ends in the model, and a small validation split picking
among its epochs picks noise.

`ckpt_path=last` resumes from `last.ckpt`, so it is written every epoch; the best checkpoint is written
in the same hook of every epoch that improves the monitored metric, and then the two files would hold the
same trainer state. Writing that state a second time (pickling, the zip's checksums, the disk write) was
the largest cost converge's default callbacks add to an epoch. `LastCheckpoint` hard-links last.ckpt to
the checkpoint just written instead, and writes its own file only in the other epochs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from converge.errors import ConfigError

KEEP = ("best", "last")


class KeptCheckpoint(ModelCheckpoint):
    """The checkpoint a run keeps: the epoch with the best `monitor` score (keep="best"), or the last epoch
    (keep="last"; the monitor is still logged and reported, it only picks nothing). Otherwise ModelCheckpoint."""

    def __init__(self, keep: str = "best", monitor: str | None = None, **kwargs: Any) -> None:
        if keep not in KEEP:
            raise ConfigError(f"monitor.keep must be one of {', '.join(KEEP)}, got {keep!r}")
        super().__init__(monitor=monitor if keep == "best" else None, **kwargs)


class LastCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint of the latest weights (no monitor, one file), linked to a checkpoint written at the
    same step and hook by another ModelCheckpoint when there is one. Its arguments are ModelCheckpoint's."""

    def __init__(self, dirpath: str | None = None, filename: str = "last", **kwargs: object) -> None:
        # Always the one file: a run resumed in its own folder finds last.ckpt there, and must not go on
        # in a last-v1.ckpt that `ckpt_path=last` would never find.
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         enable_version_counter=False, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if "{" not in (self.filename or ""):
            # Record the path this callback writes to, even in a checkpoint another callback writes earlier in
            # the same epoch (the file last.ckpt is then linked to): the state as it is once last.ckpt exists.
            state["best_model_path"] = self.format_checkpoint_name({})
        return state

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        source = self._written_this_step(trainer)
        if source is None:
            if trainer.is_global_zero:
                _unshare(filepath)
            super()._save_checkpoint(trainer, filepath)
            return
        if trainer.is_global_zero:
            _link(source, filepath)
        # What ModelCheckpoint._save_checkpoint records after a write.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _written_this_step(self, trainer: pl.Trainer) -> str | None:
        """The file another ModelCheckpoint wrote at this step in this same hook (so from the same state), if any.

        Every rank decides alike: the callbacks' save decisions are made on every rank."""
        if not _is_local_file_protocol(str(self.dirpath)):
            return None
        here = self._should_save_on_train_epoch_end(trainer)
        for other in trainer.checkpoint_callbacks:
            if (other is self or not isinstance(other, ModelCheckpoint)
                    or other.save_weights_only != self.save_weights_only
                    or other._every_n_train_steps or other._train_time_interval is not None  # saved mid-epoch
                    or other._should_save_on_train_epoch_end(trainer) != here):
                continue
            path = other._last_checkpoint_saved
            if other._last_global_step_saved == trainer.global_step and path and _is_local_file_protocol(path):
                return path
        return None


def _link(source: str, target: str) -> None:
    """Point `target` at `source`'s file, atomically (a temporary link renamed over it); a copy where the
    filesystem has no hard links."""
    temporary = Path(target).with_name(f".{Path(target).name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # no hard links here (or across devices): copy the bytes, still no second serialisation
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _unshare(path: str) -> None:
    """Unlink `path` when it is a hard link to another checkpoint, before a write replaces it: a write that
    falls back to copying into the existing file (a temporary directory on another device) would otherwise
    overwrite the best checkpoint through the shared file."""
    try:
        if os.stat(path).st_nlink > 1:
            os.unlink(path)
    except FileNotFoundError:
        pass
