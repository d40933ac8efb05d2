"""Distributed ranks that start from the composed config instead of re-running the command.

Lightning starts the other ranks of a DDP or FSDP world by running the script again
with Hydra overrides appended. Under `converge train` that re-runs Hydra in
every rank: with `-m` each rank re-launches the whole sweep, and a timestamped
run directory can differ between ranks (Lightning #11300, lightning-hydra-template
#393); and the `converge` command is not one Lightning can re-run at all (the ranks
failed, and Lightning's process observer killed the run). Here rank 0 hands its resolved config to
`python -m converge.app.ddp_rank` through the environment, so every rank trains the
same config in the same run directory, and only rank 0 ever ran Hydra. It applies to
whatever strategy the trainer has: `hardware=ddp`, `fsdp`, or `strategy: auto` given
several devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

RUN_CONFIG_ENV = "CONVERGE_RUN_CONFIG"
RANK_ENTRY = "converge.app.ddp_rank"  # the module ranks > 0 run (a name: the app sits above this layer)
_WORLD_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


class _ConfigLauncher(_SubprocessScriptLauncher):
    """Starts local ranks 1..N-1 as `python -m converge.app.ddp_rank` with `run_config`."""

    def __init__(self, strategy: Any, run_config: dict[str, Any]) -> None:
        super().__init__(strategy.cluster_environment, strategy.num_processes, strategy.num_nodes)
        self.run_config = run_config

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.saved_environment = {name: os.environ.get(name) for name in _WORLD_ENV}
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank), RUN_CONFIG_ENV: json.dumps(self.run_config)}
            command = [sys.executable, "-m", RANK_ENTRY]
            self.procs.append(subprocess.Popen(command, env=env))

    def end_world(self) -> None:
        """Wait for the ranks this process started, and forget their world, so the next job starts anew."""
        for process in self.procs:
            process.wait()
        for name, value in getattr(self, "saved_environment", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_ranks_from_config(strategy: Strategy, run_config: dict[str, Any]) -> None:
    """Have the ranks `strategy` starts from this process train `run_config` (see the module doc). A strategy
    without ranks to start (one device) is left as it is; under torchrun or SLURM, which start every rank,
    the launcher starts none.

    Args:
        strategy: the trainer's, before `fit`.
        run_config: the run's resolved config, as plain data.
    """
    if type(strategy.launcher) is _SubprocessScriptLauncher:  # Lightning's: it would re-run the command
        strategy._launcher = _ConfigLauncher(strategy, run_config)


def end_world(strategy: object) -> None:
    """After fitting: close the process group, on every rank, and wait for the ranks we started.

    Lightning keeps the group for the process's lifetime. But rank 0 then tests on
    one device (each test sample counted once), where a metric must not try to sync
    with ranks that have finished; and a sweep runs its next job in this process,
    which must start a world of its own (new ranks, a new port).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    launcher = getattr(strategy, "launcher", None)
    if isinstance(launcher, _ConfigLauncher):
        launcher.end_world()
