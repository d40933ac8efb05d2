"""Runs never share a directory by accident: each command claims a folder of its own, atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from converge.app.run_dir import claim_directory, register_run_directory
from converge.testing import run_cli

DIGITS = ["experiment=vision/digits", "debug=smoke", "model.net.upsample=1", "model.net.widths=[8,16]",
          "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.dashboards", "trainer.max_epochs=1",
          "task_name=same"]
# conf/hydra/default.yaml's run directory with the date fixed: both commands "start in the same second".
SAME_SECOND = "hydra.run.dir='${converge_run_dir:${ckpt_path},${paths.output_root},${task_name},2026-01-01_00-00-00}'"


@pytest.fixture(autouse=True)
def running_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["converge", "train"])  # not pytest's flags: -c or -h would print only


def test_a_taken_folder_gets_the_next_free_suffix(tmp_path: Path) -> None:
    stamp = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    claimed = [claim_directory(stamp) for _ in range(3)]
    assert claimed == [stamp, f"{stamp}-2", f"{stamp}-3"] and all(os.path.isdir(path) for path in claimed)


def test_a_sweep_claims_its_folder_once_however_often_hydra_reads_it(tmp_path: Path) -> None:
    register_run_directory()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="converge.conf", version_base="1.3"):
        overrides = ["experiment=vision/digits", f"paths.output_root={tmp_path}", "task_name=sweep"]
        single = compose("train", overrides, return_hydra_config=True)  # a single run reads it, claims nothing
        assert OmegaConf.select(single, "hydra.sweep.dir") and not (tmp_path / "sweep").exists()
        first, second = (compose("train", [*overrides, "hydra.mode=MULTIRUN"], return_hydra_config=True)
                         for _ in range(2))
    sweep_dir = OmegaConf.select(first, "hydra.sweep.dir")
    assert OmegaConf.select(first, "hydra.sweep.dir") == sweep_dir  # read again: the same folder, not a new claim
    other = OmegaConf.select(second, "hydra.sweep.dir")
    assert other != sweep_dir  # a second command, even in the same second
    assert sorted(p.name for p in (tmp_path / "sweep" / "multiruns").iterdir()) == sorted(
        Path(path).name for path in (sweep_dir, other))


def test_printing_the_resolved_config_claims_no_folder(tmp_path: Path) -> None:
    done = run_cli(["train", "experiment=vision/digits", "--cfg", "all", "--resolve"], cwd=tmp_path)
    assert done.returncode == 0 and "multiruns/" in done.stdout, done.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()


def test_two_runs_started_in_the_same_second_keep_their_own_folders(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "converge.cli", "train", *DIGITS, SAME_SECOND]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
    folders = sorted((tmp_path / "outputs" / "same" / "runs").iterdir())
    assert [f.name for f in folders] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00-2"]
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert Path(metrics["kept"]["checkpoint"]).parent == folder / "checkpoints"
        assert metrics["last_checkpoint"] == str(folder / "checkpoints" / "last.ckpt")
        assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best-epoch000.ckpt", "last.ckpt"}
        assert (folder / ".hydra" / "config.yaml").is_file() and (folder / "train.log").read_text()
        assert len(list((folder / "tensorboard").rglob("events.out.tfevents.*"))) >= 1
