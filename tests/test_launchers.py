"""Cluster launchers (hydra-submitit-launcher): the SLURM config's wiring, and a real sweep through submitit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from converge.testing import run_cli


def test_slurm_launcher_takes_nodes_tasks_and_gpus_from_the_hardware_config(tmp_path: Path) -> None:
    done = run_cli(["train", "experiment=vision/digits", "hydra/launcher=submitit_slurm", "hardware=multinode",
                    "trainer.num_nodes=3", "trainer.devices=4", "hydra.launcher.partition=gpu",
                    "hydra.launcher.timeout_min=240", "--cfg", "all", "--resolve", "--package", "hydra.launcher"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ConfigStore schema" not in done.stderr
    launcher = yaml.safe_load(done.stdout)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (3, 4, 4)
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu", 240)
    assert launcher["max_num_timeout"] > 0, "a timed-out job is requeued (it resumes from its last checkpoint)"
    assert launcher["submitit_folder"].startswith("outputs/vision-digits/multiruns/")


def test_slurm_sweep_with_devices_slurm_cannot_count_is_refused_before_submitting(tmp_path: Path) -> None:
    done = run_cli(["train", "-m", "experiment=vision/digits", "hydra/launcher=submitit_slurm", "hardware=ddp"],
                   cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "hydra.launcher.tasks_per_node=-1 (from trainer.devices)" in done.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # kept out of the default run for time: `pytest -m slow`
def test_sweep_through_submitit_local_writes_every_run_directory(tabular: dict, tmp_path: Path) -> None:
    done = run_cli(["train", "-m", "hydra/launcher=submitit_local", *tabular["overrides"], "debug=smoke",
                    "~callbacks.progress_bar", "task_name=local", "optim.lr=0.001,0.003"],
                   cwd=tmp_path, env=tabular["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "local" / "multiruns").iterdir()
    assert list((sweep / ".submitit").glob("*/*_log.out")), "the jobs ran as submitit jobs"
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        assert f"optim.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert json.loads((sweep / job / "metrics.json").read_text())["test"]
