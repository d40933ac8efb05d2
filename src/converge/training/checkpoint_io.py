"""Finding, safely reading and atomically writing checkpoints (`ckpt_path=PATH|best|last`).

Every read uses `weights_only=True`: a checkpoint can only hold tensors and
plain data, so opening one never runs code from it. converge checkpoints meet
that by construction (TaskModule stores configs, not modules). Every local write
is atomic (`AtomicCheckpointIO`): a full disk never leaves a truncated checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from converge.errors import CheckpointError, ReportError
from converge.layout import CHECKPOINTS_DIR, LAST_CHECKPOINT, METRICS_FILE
from converge.summary import RunSummary

LAST, BEST = "last", "best"


def resolve_checkpoint(value: str, output_root: str | Path, task_name: str) -> Path:
    """A checkpoint path from `ckpt_path=`: a file; `last`, the newest last.ckpt of `task_name` (where a run
    stopped: what to resume); `best`, the checkpoint the newest finished run of `task_name` kept (its best, or
    its last epoch with monitor.keep=last: what to evaluate or export)."""
    task_dir = Path(output_root) / task_name
    if value == BEST:
        return _kept_checkpoint(task_dir)
    if value == LAST:
        candidates = sorted(task_dir.glob(f"**/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise CheckpointError(
                f"ckpt_path=last: no {CHECKPOINTS_DIR}/{LAST_CHECKPOINT} under {task_dir}. "
                f"Train first, or set task_name= to the task whose latest run you mean."
            )
        return candidates[-1]
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _kept_checkpoint(task_dir: Path) -> Path:
    # training runs and sweep jobs only: `converge eval` writes a metrics.json of its own under evals/
    runs = [*task_dir.glob(f"runs/*/{METRICS_FILE}"), *task_dir.glob(f"multiruns/*/*/{METRICS_FILE}")]
    finished = sorted(runs, key=lambda p: p.stat().st_mtime)
    if not finished:
        raise CheckpointError(f"ckpt_path=best: no finished run under {task_dir} (none wrote {METRICS_FILE}). "
                              f"Train first, or set task_name= to the task whose latest run you mean.")
    try:
        kept = RunSummary.read(finished[-1].parent).kept.checkpoint
    except ReportError as error:
        raise CheckpointError(f"ckpt_path=best: {error}") from error
    if not kept or not Path(kept).is_file():
        raise CheckpointError(f"ckpt_path=best: the newest finished run, {finished[-1].parent}, kept no checkpoint "
                              f"that still exists ({kept or 'none'})")
    return Path(kept)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint's contents (memory-mapped, so cheap even for a large one)."""
    content = load_weights_only(path)
    if not isinstance(content, dict) or "state_dict" not in content:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return content


def load_weights_only(path: Path) -> Any:
    """A torch file's contents, refused unless it holds only tensors and plain data (never unpickles code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load, it holds objects other than tensors and plain data and "
            f"unpickling them could run arbitrary code ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {error}") from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO, with local writes that are atomic and fail as one clear error.

    Lightning writes a checkpoint through fsspec's transaction: a temporary file in /tmp copied into
    place, not atomic across devices, so a full disk leaves a truncated checkpoint that no loader can
    read, and the run ends in a traceback. Here the bytes go to a temporary file next to the target,
    are flushed and fsynced, then renamed over it: a reader sees the previous file or the new one.
    Remote paths (s3://...) keep fsspec's own transaction.

    Example::

        trainer = Trainer(plugins=[AtomicCheckpointIO()])
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write `checkpoint` to `path`, whole or not at all.

        Args:
            checkpoint: the trainer's state, as Lightning dumps it.
            path: the file to write; its folder is created.
            storage_options: not supported (TypeError), as in TorchCheckpointIO.

        Raises:
            CheckpointError: the file could not be written (no space left on device, no permission...);
                the partial file is removed and an earlier file at `path` is left as it was.
        """
        if storage_options is not None or get_protocol(str(path)) != "file":
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        _write_atomically(Path(path), buffer.getbuffer())


def _write_atomically(path: Path, content: memoryview) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        cause = os.strerror(error.errno).lower() if error.errno else str(error)
        raise CheckpointError(f"cannot write the checkpoint {path}: {cause}. Nothing partial was left: free "
                              f"space (or set paths.output_root to another disk) and train again.") from error
