"""Sweeps that resume: rerun a killed `-m` sweep into its own directory and only its unfinished jobs run.

The user reruns the same command with `hydra.sweep.dir=<the killed sweep's directory>`
(the sweep prints that line when it starts). Two parts make it work:

- `SweepRecord`, a Hydra callback, writes the sweep's overrides to `<sweep dir>/sweep.json`
  when the sweep starts, and on a rerun into the same directory refuses overrides that
  differ: job N must be the same job in both runs.
- `finished_sweep_job` and `interrupted_sweep_job`, asked by every job: a job whose directory
  holds `metrics.json` finished, and is skipped with its stored result; one whose directory holds
  `checkpoints/last.ckpt` but no `metrics.json` was interrupted, and continues from it.
  (So does a SLURM job that submitit requeues after a preemption: same job, same directory.)
  Each job keeps its own overrides in `sweep_job.json`, so a job N that would now be another
  job (a sweeper that picks values adaptively, such as Optuna's) is refused, not skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from converge.errors import ConfigError, run_reporting_errors
from converge.layout import JOB_RECORD, SWEEP_RECORD, last_checkpoint, write_json
from converge.summary import RunSummary

log = logging.getLogger("converge")

class SweepRecord(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        run_reporting_errors(lambda: record_or_check(sweep_dir, list(config.hydra.overrides.task)))


def record_or_check(sweep_dir: Path, overrides: list[str]) -> None:
    """Record a new sweep's overrides; for a rerun into an existing sweep, insist they are the same."""
    record = sweep_dir / SWEEP_RECORD
    # A sweep that failed before any job started (a bad search space, say) left only its record: nothing
    # would be mixed, so the corrected command takes the directory over rather than being refused.
    if not record.is_file() or not any(sweep_dir.glob(f"*/{JOB_RECORD}")):
        write_json(record, {"overrides": overrides})
        log.info("if this sweep is interrupted, rerun the same command with hydra.sweep.dir=%s to finish it",
                 sweep_dir)
        return
    stored = json.loads(record.read_text())["overrides"]
    if sorted(stored) != sorted(overrides):
        added, missing = sorted(set(overrides) - set(stored)), sorted(set(stored) - set(overrides))
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} holds a sweep of other overrides, so its jobs would not match.\n"
            f"  stored: {' '.join(stored)}\n  now:    {' '.join(overrides)}\n"
            f"  (new: {' '.join(added) or '-'}; missing: {' '.join(missing) or '-'})\n"
            f"Rerun with the stored overrides to resume that sweep, or pick another hydra.sweep.dir."
        )
    log.info("resuming the sweep in %s: finished jobs are skipped, interrupted ones continue", sweep_dir)


def finished_sweep_job(run_dir: Path) -> RunSummary | None:
    """In a sweep job: the stored summary when an earlier run of this sweep finished this job (it is skipped)."""
    if not _in_sweep():
        return None
    record_or_check_job(run_dir, list(HydraConfig.get().overrides.task))
    if not RunSummary.finished(run_dir):
        return None
    log.info("%s finished in an earlier run of this sweep: skipped", run_dir)
    return RunSummary.read(run_dir)


def interrupted_sweep_job(run_dir: Path) -> str | None:
    """In a sweep job: its own last.ckpt, where an earlier run of this sweep was interrupted (it continues)."""
    last = last_checkpoint(run_dir)
    return str(last) if _in_sweep() and last.is_file() else None


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_or_check_job(run_dir: Path, overrides: list[str]) -> None:
    """Record a job's overrides in its directory; on a rerun, insist it is still the same job.

    Every task of a multi-task SLURM job runs the job in this directory: only global rank 0 writes
    (concurrent writers would race on the same partial file), the others only check an existing record.
    """
    from lightning.pytorch.utilities import rank_zero_only

    record = run_dir / JOB_RECORD
    if not record.is_file():
        if rank_zero_only.rank == 0:
            write_json(record, {"overrides": overrides})
        return
    stored = json.loads(record.read_text())["overrides"]
    if sorted(stored) != sorted(overrides):
        raise ConfigError(
            f"{run_dir} ran with other overrides ({' '.join(stored)}) than this job has now "
            f"({' '.join(overrides)}): this sweep's jobs are not the same on a rerun (an adaptive sweeper?), "
            f"so it cannot be resumed. Pick another hydra.sweep.dir."
        )
