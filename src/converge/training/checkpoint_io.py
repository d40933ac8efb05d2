"""Finding and safely reading checkpoints (`ckpt_path=PATH|best|last`).

Every read uses `weights_only=True`: a checkpoint can only hold tensors and
plain data, so opening one never runs code from it. converge checkpoints meet
that by construction (TaskModule stores configs, not modules).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

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
