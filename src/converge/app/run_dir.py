"""The run directory: written by rank 0 only, complete or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

from converge.layout import CHECKPOINTS_DIR, HYDRA_DIR, RUN_ENTRIES

RUN_DIRECTORY_RESOLVER = "converge_run_dir"


def run_directory(ckpt_path: str | None, output_root: str, task_name: str, stamp: str) -> str:
    """`converge train`'s hydra.run.dir: a new folder per run, except when resuming a checkpoint that an earlier
    run wrote into its checkpoints/ folder. That run then goes on in its own folder: its best checkpoint (Lightning
    restores the best score only for the same folder), curves, train.log and metrics.json stay one run's."""
    fresh = f"{output_root}/{task_name}/runs/{stamp}"
    if not ckpt_path:
        return fresh
    from converge.errors import CheckpointError
    from converge.training.checkpoint_io import resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(str(ckpt_path), output_root, task_name)
    except CheckpointError:
        return fresh  # training reports it, as one clear error, and removes the empty folder
    run = checkpoint.parent.parent
    return str(run) if checkpoint.parent.name == CHECKPOINTS_DIR and (run / HYDRA_DIR).is_dir() else fresh


def register_run_directory() -> None:
    """Make `${converge_run_dir:...}` (conf/hydra/default.yaml) resolvable: before Hydra creates the folder."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RUN_DIRECTORY_RESOLVER):
        OmegaConf.register_new_resolver(RUN_DIRECTORY_RESOLVER, run_directory)


def discard_if_untrained(run_dir: Path) -> bool:
    """After a failure: remove a run directory that holds no checkpoint, so nothing misleading stays.

    Only the entries a run creates are removed, and the folder only if that left it
    empty: pointing hydra.run.dir at a folder of your own never loses its files.
    """
    if not run_dir.is_dir() or any(run_dir.glob(f"{CHECKPOINTS_DIR}/*.ckpt")):
        return False
    for name in RUN_ENTRIES:
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
