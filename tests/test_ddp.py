"""Real DDP: 2 gloo processes on CPU, launched through `converge train`, one run directory."""

from __future__ import annotations

import json

import pytest

from converge.testing import run_cli

DDP = ["hardware=ddp_cpu", "debug=smoke", "~callbacks.progress_bar", "~callbacks.model_summary"]



@pytest.mark.parametrize("world", [["hardware=ddp_cpu"], ["trainer.devices=2"]], ids=["ddp_cpu", "auto_strategy"])
def test_ddp_cpu_trains_one_world_in_one_run_directory(world: list[str], tabular: dict, tmp_path) -> None:
    """`hardware=ddp_cpu`, or several devices under the default `strategy: auto` (which Lightning makes DDP, its
    ranks then started by re-running the command: they failed, and took the run down with them)."""
    done = run_cli(["train", *tabular["overrides"], *DDP[1:], *world, "task_name=ddp"], cwd=tmp_path,
                   env=tabular["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "ddp" / "runs").iterdir())
    assert len(runs) == 1, "every rank must use rank 0's run directory"
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["ddp"]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]
    assert len(list((runs[0] / "tensorboard").glob("events.out.tfevents.*"))) >= 1
    assert not list(runs[0].glob("**/*ddp_process*")), "no rank but 0 writes"


def test_ddp_inside_a_sweep_runs_each_job_as_its_own_world(tabular: dict, tmp_path) -> None:
    """Lightning + Hydra re-launch the sweep from every rank (Lightning #11300): here each job is one world."""
    done = run_cli(["train", "-m", *tabular["overrides"], *DDP, "task_name=sweep", "optim.lr=0.001,0.003"],
                   cwd=tmp_path, env=tabular["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "sweep" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2
    assert done.stderr.count("Launching 2 jobs locally") + done.stdout.count("Launching 2 jobs locally") == 1


@pytest.mark.parametrize("hardware", ["ddp", "fsdp"])
def test_gpu_hardware_without_gpus_is_refused_before_launch(hardware: str, tabular: dict, tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_cli(["train", *tabular["overrides"], f"hardware={hardware}"], cwd=tmp_path, env=tabular["env"])
    assert done.returncode == 2 and "GPU(s)" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.json"))


@pytest.mark.slow  # kept out of the default run for time: `pytest -m slow`
def test_torchrun_two_nodes_make_one_world_and_one_run_directory(tabular: dict, tmp_path) -> None:
    """hardware=multinode under torchrun: two "nodes" on this machine, every process runs `converge train`."""
    import os
    import subprocess
    import sys

    from converge.testing.compose import free_port

    port = str(free_port())
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "converge.cli", "train",
               *tabular["overrides"], "hardware=multinode", "debug=smoke", "task_name=nodes",
               "~callbacks.progress_bar"]
    env = {**os.environ, **tabular["env"]}
    nodes = [subprocess.Popen([*command[:3], f"--node_rank={rank}", *command[3:]], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    (run,) = (tmp_path / "outputs" / "nodes" / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["world_size"] == 2
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["nodes"]


def test_ddp_validation_counts_every_sample_once(tmp_path) -> None:
    """An odd validation split on 2 ranks: the confusion matrix and val/acc count 145 samples, not 146."""
    from converge.app.build import build_datamodule
    from converge.testing import compose
    from converge.testing.dashboards import check_confusion_matrix, read_events

    digits = ["experiment=vision/digits", "data.val_fraction=0.1008", "model.net.upsample=1", "model.net.widths=[8,16]"]
    data = build_datamodule(compose(digits).data)
    validation = len(data.val_dataloader().dataset)
    assert validation % 2 == 1
    done = run_cli(["train", *digits, *DDP, "trainer.limit_val_batches=1.0", "callbacks.dashboards.every_n_epochs=1",
                    "task_name=ddp"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "ddp" / "runs").iterdir()
    check_confusion_matrix(read_events(run), data.spec()["class_names"], validation)
