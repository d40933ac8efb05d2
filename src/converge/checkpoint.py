"""Finding and safely reading checkpoints.

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

from converge.errors import CheckpointError

LAST = "last"


def resolve_checkpoint(value: str, output_root: str | Path, task_name: str) -> Path:
    """A checkpoint path from `ckpt_path=`: a file, or `last` for the newest last.ckpt of `task_name`."""
    if value == LAST:
        task_dir = Path(output_root) / task_name
        candidates = sorted(task_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise CheckpointError(
                f"ckpt_path=last: no checkpoints/last.ckpt under {task_dir}. "
                f"Train first, or set task_name= to the task whose latest run you mean."
            )
        return candidates[-1]
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint's contents (memory-mapped, so cheap even for a large one)."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load, it holds objects other than tensors and plain data and "
            f"unpickling them could run arbitrary code ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {error}") from error
    if not isinstance(content, dict) or "state_dict" not in content:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return content
