"""The run directory: written by rank 0 only, complete or not at all."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from converge.layout import CHECKPOINTS_DIR, HYDRA_DIR, RUN_ENTRIES

RUN_DIRECTORY_RESOLVER = "converge_run_dir"
NEW_DIRECTORY_RESOLVER = "converge_new_dir"
SWEEP_DIRECTORY_RESOLVER = "converge_sweep_dir"
_PRINT_ONLY = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help")  # Hydra's flags that run no job


def run_directory(ckpt_path: str | None, output_root: str, task_name: str, stamp: str) -> str:
    """`converge train`'s hydra.run.dir: a new folder per run, except when resuming a checkpoint that an earlier
    run wrote into its checkpoints/ folder. That run then goes on in its own folder: its best checkpoint (Lightning
    restores the best score only for the same folder), curves, train.log and metrics.json stay one run's."""
    fresh = f"{output_root}/{task_name}/runs/{stamp}"
    if not ckpt_path:
        return claim_directory(fresh)
    from converge.errors import CheckpointError
    from converge.training.checkpoint_io import resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(str(ckpt_path), output_root, task_name)
    except CheckpointError:
        return claim_directory(fresh)  # training reports it, as one clear error, and removes the empty folder
    run = checkpoint.parent.parent
    if checkpoint.parent.name == CHECKPOINTS_DIR and (run / HYDRA_DIR).is_dir():
        return str(run)
    return claim_directory(fresh)


def claim_directory(path: str) -> str:
    """A new folder for one run or sweep: `path`, or `path-2`, `path-3`... when that exists. os.mkdir fails on an
    existing folder, so two commands started in the same second each get their own and neither loses its files."""
    if any(arg.partition("=")[0] in _PRINT_ONLY for arg in sys.argv[1:]):
        return path  # `--cfg all --resolve` reads the name and runs nothing: no empty folder left behind
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    claimed, number = path, 1
    while True:
        try:
            os.mkdir(claimed)
            return claimed
        except FileExistsError:
            number += 1
            claimed = f"{path}-{number}"


def sweep_directory(path: str, mode: object) -> str:
    """A sweep's folder, claimed as a run's is (see `claim_directory`), but only by a sweep (`-m`): a single run
    that reads its `hydra.sweep.dir` (a search's storage interpolates it) must not leave an empty folder."""
    return claim_directory(path) if str(mode).endswith("MULTIRUN") else path


def register_run_directory() -> None:
    """Make `${converge_run_dir:...}`, `${converge_new_dir:...}` and `${converge_sweep_dir:...}` resolvable: before
    Hydra creates the folder. Cached (per config, and Hydra copies the cache into each sweep job's config, as for
    `${now:}`): a run claims its folder once, however often Hydra reads the key."""
    from omegaconf import OmegaConf

    resolvers = ((RUN_DIRECTORY_RESOLVER, run_directory), (NEW_DIRECTORY_RESOLVER, claim_directory),
                 (SWEEP_DIRECTORY_RESOLVER, sweep_directory))
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)


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
