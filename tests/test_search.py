"""Hyperparameter search: `converge train -m ... hparams_search=...` runs, resumes and prunes an Optuna study.

Real components throughout: Hydra composition, the sweeper plugin, Lightning trainings of the digits task
(a few batches each), and the SQLite study read back with Optuna.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from converge.errors import ConfigError
from converge.search.space import search_space
from converge.testing import run_cli

# A tiny digits training: the searched key is optim.lr; the rest of the digits space is pinned (a plain
# override takes a key out of the search), so trials differ only in their learning rate.
TINY = ["experiment=vision/digits", "hparams_search=vision/digits", "trainer.max_epochs=2",
        "+trainer.limit_train_batches=6", "+trainer.limit_val_batches=2", "+trainer.num_sanity_val_steps=0",
        "test_after_fit=false", "scheduler=none", "~callbacks.progress_bar", "~callbacks.model_summary",
        "model.net.widths=[8,16,32]", "model.net.upsample=1", "model.label_smoothing=0.0", "model.net.dropout=0.0",
        "optim.weight_decay=0.0"]


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")


def _states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.get_trials(deepcopy=False)]


@pytest.fixture(scope="module")
def pruned_search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three trials whose learning rates the test chose (enqueued in the study before the search starts):
    two that learn, then lr=0, which cannot; the median pruner may prune from the third trial's first epoch."""
    cwd = tmp_path_factory.mktemp("search")
    folder = cwd / "outputs" / "digits-search" / "searches" / "pruning"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="pruning", storage=f"sqlite:///{folder / 'study.db'}",
                                direction="minimize")
    for lr in (0.01, 0.005, 0.0):
        study.enqueue_trial({"optim.lr": lr})
    command = ["train", "-m", *TINY, "task_name=digits-search", "optim.lr=interval(0.0, 0.02)",
               "hydra.sweeper.study_name=pruning", "hydra.sweeper.n_trials=3",
               "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0"]
    done = run_cli(command, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"cwd": cwd, "folder": folder, "command": command, "output": done.stdout + done.stderr}


def test_search_writes_the_study_and_the_best_trial(pruned_search: dict) -> None:
    folder = pruned_search["folder"]
    study = _study(folder)
    assert _states(study) == ["COMPLETE", "COMPLETE", "PRUNED"]
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["direction"] == "minimize" and best["metric"] == "val/loss"
    assert best["trials"] == {"complete": 2, "pruned": 1, "fail": 0}
    assert best["best"]["number"] == study.best_trial.number and best["best"]["value"] == study.best_value
    assert best["best"]["params"] == study.best_params
    assert f"optim.lr={study.best_params['optim.lr']}" in best["best"]["overrides"]
    assert not any(o.startswith("hparams_search=") for o in best["best"]["overrides"])
    # the monitor the trials were scored by travels with the command, as hparams_search=... no longer sets it
    assert {"monitor.metric=val/loss", "monitor.mode=min"} <= set(best["best"]["overrides"])
    assert f"best trial {study.best_trial.number}" in pruned_search["output"]
    for trial in study.trials[:2]:  # a completed trial: a finished run whose metrics match the study
        metrics = json.loads((folder / str(trial.number) / "metrics.json").read_text())
        assert metrics["kept"]["score"] == pytest.approx(trial.value)
        assert json.loads((folder / str(trial.number) / "trial.json").read_text())["state"] == "COMPLETE"


def test_a_trial_that_cannot_learn_is_pruned(pruned_search: dict) -> None:
    trial = _study(pruned_search["folder"]).trials[2]
    assert trial.params == {"optim.lr": 0.0} and trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [0], "pruned after its first epoch, not run to the end"
    run_dir = pruned_search["folder"] / "2"
    record = json.loads((run_dir / "trial.json").read_text())
    assert record["state"] == "PRUNED" and record["reason"].startswith("pruned at epoch 0: val/loss=")
    assert not (run_dir / "metrics.json").exists(), "a pruned run must not look like a finished one"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_rerunning_a_finished_search_adds_no_trial(pruned_search: dict) -> None:
    done = run_cli(pruned_search["command"], cwd=pruned_search["cwd"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 of 3 trials done" in done.stdout + done.stderr
    assert len(_study(pruned_search["folder"]).trials) == 3


def test_resuming_with_another_search_is_refused(pruned_search: dict) -> None:
    # (other task overrides are refused before the sweeper starts, by converge.app.sweeps.SweepRecord)
    done = run_cli([*pruned_search["command"], "hydra.sweeper.direction=max"], cwd=pruned_search["cwd"])
    assert done.returncode == 2
    assert "study 'pruning' was started with another search (direction" in done.stderr
    assert "hydra.sweeper.study_name=NAME" in done.stderr


@pytest.mark.slow  # kept out of the default run for time: `pytest -m slow`
def test_a_killed_search_resumes_with_the_missing_trials_only(tmp_path: Path) -> None:
    """SIGKILL while trial 1 trains; the same command then fails trial 1, runs its params again, and one more."""
    command = [sys.executable, "-m", "converge.cli", "train", "-m", *TINY, "task_name=digits-kill",
               "optim.lr=tag(log, interval(1e-3, 3e-2))", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=null"]
    folder = tmp_path / "outputs" / "digits-kill" / "searches" / "digits"
    with open(tmp_path / "killed.log", "w") as log:
        search = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not ((folder / "0" / "metrics.json").exists() and _trial_started(folder, 1)):
                assert search.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "trial 1 never started"
                time.sleep(0.2)
        finally:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()
    assert _states(_study(folder)) == ["COMPLETE", "RUNNING"]

    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _study(folder)
    assert _states(study) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[2].params == study.trials[1].params, "the killed trial's params run again"
    assert study.trials[2].user_attrs["retry_of"] == 1
    assert json.loads((folder / "1" / "trial.json").read_text())["reason"] == "interrupted"
    assert yaml.safe_load((folder / "best.yaml").read_text())["trials"]["complete"] == 3


def _trial_started(folder: Path, number: int) -> bool:
    """Trial `number` is training: its pruning callback has recorded the run directory."""
    if not (folder / str(number)).is_dir():
        return False
    trials = _study(folder).get_trials(deepcopy=False)
    return len(trials) > number and "run_dir" in trials[number].user_attrs


def test_search_space_from_yaml_and_command_line() -> None:
    space = search_space({"optim.lr": "tag(log, interval(1e-4, 1e-1))", "model.net.dim": "choice(32, 64)",
                          "model.net.widths": "choice([8,16], [16,32])"},
                         ["experiment=text/r8", "model.net.dim=128", "model.net.dropout=interval(0.0, 0.5)",
                          "data.batch_size=range(32, 129, 32)"])
    assert space.fixed == ["experiment=text/r8", "model.net.dim=128"]
    assert set(space.params) == {"optim.lr", "model.net.widths", "model.net.dropout", "data.batch_size"}
    lr = space.params["optim.lr"].distribution
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 0.1)
    batch = space.params["data.batch_size"].distribution
    assert isinstance(batch, optuna.distributions.IntDistribution) and (batch.low, batch.high, batch.step) == \
        (32, 128, 32)
    widths = space.params["model.net.widths"]
    assert widths.distribution.choices == ("[8,16]", "[16,32]")
    assert widths.override("[16,32]") == "model.net.widths=[16,32]"
    assert space.params["model.net.dropout"].override(0.25) == "model.net.dropout=0.25"


@pytest.mark.parametrize(("params", "arguments", "message"), [
    ({"optim.lr": "0.1"}, [], "is one value, not a range"),
    ({}, ["optim.lr=0.1"], "the search space is empty"),
    ({"optim.lr": "interval(0.1"}, [], "cannot parse"),
    ({"model.net.dim": "range(64, 32)"}, [], "not a range Optuna can search"),
    ({"optim.lr": "tag(log, interval(0.0, 0.1))"}, [], "not a range Optuna can search"),
])
def test_bad_search_spaces_are_user_errors(params: dict, arguments: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space(params, arguments)


def test_a_search_config_without_multirun_is_a_user_error(tmp_path: Path) -> None:
    done = run_cli(["train", *TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 2 and "add -m" in done.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "run").exists()
