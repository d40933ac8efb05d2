"""Resume after a crash: real runs killed with SIGKILL, restarted, compared with uninterrupted ones."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from converge.testing import run_cli

# Digits with random shifts (augmentation) and a CNN with dropout: every source of training randomness;
# the best epoch kept (the experiment keeps the last), so a resume must restore the best score.
DIGITS = ["experiment=vision/digits", "debug=smoke", "model.net.upsample=1", "model.net.widths=[8,16]",
          "trainer.deterministic=true", "seed=3", "~callbacks.progress_bar", "~callbacks.model_summary",
          "monitor.keep=best"]
KILL = ["+callbacks.crash._target_=converge.testing.faults.KillAt", "+callbacks.crash.epoch=1",
        "+callbacks.crash.batch=1"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    whole = run_cli(["train", *DIGITS, "task_name=whole"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run_cli(["train", *DIGITS, *KILL, "task_name=crash"], cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (crashed,) = (tmp_path / "outputs" / "crash" / "runs").iterdir()
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not (crashed / "metrics.json").exists()

    resumed = run_cli(["train", *DIGITS, "task_name=crash", "ckpt_path=last"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {crashed.relative_to(tmp_path)}" in resumed.stdout + resumed.stderr
    (uninterrupted,) = (tmp_path / "outputs" / "whole" / "runs").iterdir()
    assert list((tmp_path / "outputs" / "crash" / "runs").iterdir()) == [crashed], "it goes on in its own folder"
    expected, got = _weights(uninterrupted), _weights(crashed)
    assert expected.keys() == got.keys()
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    assert not different, f"weights differ after resuming: {different}"
    whole_metrics, resumed_metrics = (json.loads((run / "metrics.json").read_text())
                                      for run in (uninterrupted, crashed))
    assert resumed_metrics["epochs_trained"] == 2
    # the best checkpoint is chosen over every epoch, those before the crash too (same folder, restored best score)
    assert resumed_metrics["kept"]["score"] == pytest.approx(whole_metrics["kept"]["score"])
    assert resumed_metrics["kept"]["epoch"] == whole_metrics["kept"]["epoch"]


def test_keep_last_keeps_the_last_epoch_and_a_longer_resume_moves_it(tmp_path: Path) -> None:
    keep_last = [*DIGITS, "monitor.keep=last", "task_name=last"]
    first = run_cli(["train", *keep_last], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "last" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "convergence.json").read_text())["epochs"]
    assert metrics["keep"] == "last" and metrics["monitor"] == "val/loss"
    assert metrics["kept"]["epoch"] == history[-1]["epoch"] == 1
    assert metrics["kept"]["score"] == pytest.approx(history[-1]["monitor"]), "the last epoch's own val/loss"
    assert "| last-epoch val/loss |" in (run / "report.md").read_text()

    # More epochs than the run had: the kept checkpoint moves to the new last epoch, still one file.
    longer = run_cli(["train", *keep_last, "ckpt_path=last", "trainer.max_epochs=3"], cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["best-epoch002.ckpt", "last.ckpt"]
    assert json.loads((run / "metrics.json").read_text())["kept"]["epoch"] == 2


def test_an_unknown_keep_is_one_clear_error() -> None:
    from converge.app.build import build_callbacks
    from converge.errors import ConfigError
    from converge.testing import compose

    with pytest.raises(ConfigError, match="monitor.keep must be one of best, last, got 'worst'"):
        build_callbacks(compose([*DIGITS, "monitor.keep=worst"], output_dir="/tmp/unused").callbacks)


def test_a_checkpoint_outside_a_run_folder_resumes_into_a_new_run(tmp_path: Path) -> None:
    from converge.app.run_dir import run_directory

    run = tmp_path / "outputs" / "digits" / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    loose = tmp_path / "weights.ckpt"
    loose.write_bytes(b"")
    root = str(tmp_path / "outputs")
    assert run_directory(str(run / "checkpoints" / "last.ckpt"), root, "digits", "now") == str(run)
    assert run_directory("last", root, "digits", "now") == str(run)
    assert run_directory(str(loose), root, "digits", "now") == f"{root}/digits/runs/now"
    assert run_directory(None, root, "digits", "now") == f"{root}/digits/runs/now-2"  # each new run claims its own
    assert run_directory(str(tmp_path / "missing.ckpt"), root, "digits", "now") == f"{root}/digits/runs/now-3"


TABULAR = ["debug=smoke", "trainer.max_epochs=15", "~callbacks.early_stopping", "~callbacks.progress_bar",
           "~callbacks.model_summary", "task_name=sweep"]
LRS = "optim.lr=0.001,0.002,0.003"


def _kill_when(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    """SIGKILL `process` as soon as a file matching `path_glob` appears under `root`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = list(root.glob(path_glob))
        if found:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return found[0]
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"{path_glob} never appeared: {process.communicate()[0][-3000:]}")


@pytest.mark.slow  # kept out of the default run for time: `pytest -m slow`
def test_killed_sweep_rerun_into_its_directory_runs_only_the_unfinished_jobs(tabular: dict, tmp_path: Path) -> None:
    import os

    command = [sys.executable, "-m", "converge.cli", "train", "-m", *tabular["overrides"], *TABULAR, LRS]
    sweep = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, **tabular["env"]}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    last = _kill_when("outputs/sweep/multiruns/*/1/checkpoints/last.ckpt", tmp_path, sweep)
    sweep_dir = last.parents[2]
    first = sweep_dir / "0" / "metrics.json"
    assert first.is_file() and not (sweep_dir / "1" / "metrics.json").exists(), "killed while job 1 trained"
    assert not (sweep_dir / "2").exists()
    first_written = first.stat().st_mtime_ns

    rerun = run_cli(["train", "-m", *tabular["overrides"], *TABULAR, LRS, f"hydra.sweep.dir={sweep_dir}"],
                    cwd=tmp_path, env=tabular["env"])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"{sweep_dir / '0'} finished in an earlier run of this sweep: skipped" in log
    assert f"resuming from {sweep_dir / '1' / 'checkpoints' / 'last.ckpt'}" in log
    assert first.stat().st_mtime_ns == first_written, "a finished job must not run again"
    for job in ("1", "2"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["epochs_trained"] == 15 and metrics["test"]

    changed = run_cli(["train", "-m", *tabular["overrides"], *TABULAR, "optim.lr=0.001,0.005",
                       f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=tabular["env"])
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "holds a sweep of other overrides" in changed.stderr and "Traceback" not in changed.stderr
    assert "optim.lr=0.001,0.005" in changed.stderr


def test_a_job_that_would_differ_on_a_rerun_is_refused_not_skipped(tmp_path: Path) -> None:
    from converge.app.sweeps import record_or_check_job
    from converge.errors import ConfigError

    record_or_check_job(tmp_path, ["optim.lr=0.1", "seed=1"])
    record_or_check_job(tmp_path, ["seed=1", "optim.lr=0.1"])  # the same job
    with pytest.raises(ConfigError, match="ran with other overrides"):
        record_or_check_job(tmp_path, ["optim.lr=0.2", "seed=1"])


def test_a_sweep_that_started_no_job_is_taken_over_by_the_corrected_command(tmp_path: Path) -> None:
    from converge.app.sweeps import JOB_RECORD, record_or_check
    from converge.errors import ConfigError

    record_or_check(tmp_path, ["optim.lr=interval(1,0)"])  # failed before its first job: only the record
    record_or_check(tmp_path, ["optim.lr=interval(0,1)"])  # the fixed command takes the directory over
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / JOB_RECORD).write_text('{"overrides": []}')
    with pytest.raises(ConfigError, match="holds a sweep of other overrides"):
        record_or_check(tmp_path, ["optim.lr=interval(0,2)"])  # once a job ran, mixing sweeps is refused
