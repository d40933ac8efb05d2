"""The run directory: written by rank 0 only, complete or not at all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# What a run creates; on a failure before any checkpoint exists these go again.
_RUN_ENTRIES = (".hydra", "train.log", "tensorboard", "checkpoints", "csv", "sweep_job.json", "convergence.json")


def write_json(path: Path, content: Any) -> None:
    """Write atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def discard_if_untrained(run_dir: Path) -> bool:
    """After a failure: remove a run directory that holds no checkpoint, so nothing misleading stays.

    Only the entries a run creates are removed, and the folder only if that left it
    empty: pointing hydra.run.dir at a folder of your own never loses its files.
    """
    if not run_dir.is_dir() or any(run_dir.glob("checkpoints/*.ckpt")):
        return False
    for name in _RUN_ENTRIES:
        entry = run_dir / name
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists():
            entry.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        return False
    return True
