"""The end-of-run report: written by `converge train`, printed again by `converge report` for a run or a sweep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converge.testing import run_cli

TINY = ["experiment=vision/digits", "~callbacks.progress_bar", "~callbacks.model_summary", "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2", "+trainer.limit_test_batches=1", "+trainer.num_sanity_val_steps=0",
        "task_name=tiny"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-job sweep over the learning rate, run by the real CLI under outputs/ of a scratch folder."""
    cwd = tmp_path_factory.mktemp("project")
    done = run_cli(["train", "-m", *TINY, "optim.lr=0.001,0.003"], cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "tiny" / "multiruns").iterdir()
    return {"dir": sweep_dir, "jobs": [sweep_dir / "0", sweep_dir / "1"], "output": done.stdout + done.stderr}


def test_train_writes_the_report_and_prints_its_summary(sweep: dict) -> None:
    run_dir = sweep["jobs"][0]
    report = (run_dir / "report.md").read_text()
    for fact in ("| state | improving (since epoch 0) |", "| last-epoch val/loss |",
                 "| stopped | epoch 1: max epochs reached |", "| gap at checkpoint epoch |", "| time per epoch |",
                 "| baseline (trivial predictor) | val/acc", "![train and validation loss per epoch](loss.png)",
                 "## Per epoch"):
        assert fact in report, fact
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG"), "the plot is a PNG"
    assert f"run report: {run_dir / 'report.md'}" in sweep["output"]
    assert "stopped" in sweep["output"] and "max epochs reached" in sweep["output"]


def test_report_prints_a_finished_run_again_without_torch(sweep: dict) -> None:
    run_dir = sweep["jobs"][1]
    (run_dir / "report.md").unlink()
    (run_dir / "loss.png").unlink()
    code = ("import sys; from converge.cli import main; code = main(['report', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'converge report imported torch'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run report: {run_dir / 'report.md'}" in done.stdout and "state" in done.stdout
    assert (run_dir / "report.md").is_file() and (run_dir / "loss.png").is_file(), "written again from the logs"


def test_report_of_a_sweep_compares_its_jobs(sweep: dict) -> None:
    done = run_cli(["report", str(sweep["dir"])])
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| job |"))
    assert "last-epoch val/loss" in header and "test/acc" in header and "state" in header and "epochs" in header
    rows = [line for line in lines if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2
    assert "optim.lr=0.001" in rows[0] and "optim.lr=0.003" in rows[1]
    assert "experiment=vision/digits" not in rows[0], "overrides all jobs share are listed once, above the table"
    assert any(line.startswith("shared overrides:") and "experiment=vision/digits" in line for line in lines)


@pytest.mark.parametrize("make", ["missing", "empty", "failed_run"])
def test_report_of_something_else_is_a_clear_error(make: str, tmp_path: Path) -> None:
    target = tmp_path / "run"
    if make != "missing":
        target.mkdir()
    if make == "failed_run":
        (target / ".hydra").mkdir()
    done = run_cli(["report", str(target)])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    expected = "no such directory" if make == "missing" else "neither a finished run"
    assert expected in done.stderr


def test_help_lists_report_without_importing_torch() -> None:
    code = ("import sys; from converge.cli import main; main(['--help']); "
            "assert not {'torch', 'matplotlib'} & set(sys.modules), 'converge --help imported torch or matplotlib'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "report RUN_DIR|SWEEP_DIR" in done.stdout
