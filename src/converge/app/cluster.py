"""Check a SLURM sweep's resources before anything is submitted.

conf/hydra/launcher/submitit_slurm.yaml takes nodes, tasks per node and GPUs per node
from the hardware config (`trainer.num_nodes`, `trainer.devices`). Lightning's `auto`
or `-1` ("every device of this machine") mean nothing to sbatch, which runs elsewhere,
so they are refused here in one sentence rather than by SLURM after queueing.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from converge.errors import ConfigError, run_reporting_errors

_COUNTS = {"nodes": "trainer.num_nodes", "tasks_per_node": "trainer.devices", "gpus_per_node": "trainer.devices"}


class SlurmResources(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_reporting_errors(lambda: check_slurm_resources(config))


def check_slurm_resources(config: DictConfig) -> None:
    launcher = config.hydra.get("launcher") or {}
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return
    for key, source in _COUNTS.items():
        value = launcher.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ConfigError(
                f"hydra/launcher=submitit_slurm: hydra.launcher.{key}={value!r} (from {source}) is not a number "
                f"SLURM can reserve. Set {source}=N (per node: one task per GPU), or hydra.launcher.{key}=N."
            )
