"""The plugin conformance suite: what every converge task must do, checked for real.

Subclass `PluginConformance` in a test module and set `overrides` to the config
choices of a small, real run of your task (data and model). Each test composes
the real config, trains with a real Lightning Trainer on CPU for a few batches
and checks the run directory, the checkpoint contract and resuming.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from converge.testing.compose import compose

SMOKE = ["debug=smoke", "hardware=cpu", "~callbacks.progress_bar", "~callbacks.model_summary"]


class PluginConformance:
    overrides: ClassVar[list[str]] = []  # e.g. ["data=vision/digits", "model=vision/cnn"]

    @pytest.fixture(scope="class")
    def trained(self, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        """One smoke training run shared by the tests of the class."""
        from converge.app.train import train

        run_dir = tmp_path_factory.mktemp("run") / "smoke"
        cfg = compose([*self.overrides, *SMOKE], output_dir=run_dir)
        train(cfg)
        return {"cfg": cfg, "run_dir": run_dir, "metrics": json.loads((run_dir / "metrics.json").read_text())}

    def test_train_writes_run_directory(self, trained: dict[str, Any]) -> None:
        run_dir, metrics = trained["run_dir"], trained["metrics"]
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert metrics["best"]["checkpoint"] and Path(metrics["best"]["checkpoint"]).is_file()
        assert metrics["monitor"].startswith("val/")
        assert metrics["test"], "the best checkpoint was not tested"
        assert all(key.startswith("test/") for key in metrics["test"])
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    def test_checkpoint_is_weights_only_and_rebuilds(self, trained: dict[str, Any]) -> None:
        from converge.app.build import load_task

        path = trained["run_dir"] / "checkpoints" / "last.ckpt"
        torch.load(path, weights_only=True)  # plain data only: loads without trusting the file
        task, checkpoint = load_task(path)
        assert checkpoint["epoch"] == trained["metrics"]["epochs_trained"] - 1
        assert type(task).monitor == trained["metrics"]["monitor"]

    def test_resume_continues_from_last(self, trained: dict[str, Any], tmp_path: Path) -> None:
        from converge.app.train import train

        last = trained["run_dir"] / "checkpoints" / "last.ckpt"
        epochs = trained["metrics"]["epochs_trained"]
        cfg = compose([*self.overrides, *SMOKE, f"ckpt_path={last}", f"trainer.max_epochs={epochs + 1}"],
                      output_dir=tmp_path / "resumed")
        train(cfg)
        resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
        assert resumed["epochs_trained"] == epochs + 1
        assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epochs

    def test_evaluate_checkpoint(self, trained: dict[str, Any], tmp_path: Path) -> None:
        from converge.app.evaluate import evaluate

        best = trained["metrics"]["best"]["checkpoint"]
        cfg = compose([f"ckpt_path={best}", "+trainer.limit_test_batches=2"], output_dir=tmp_path / "eval",
                      config_name="eval")
        metrics = evaluate(cfg)
        assert metrics == pytest.approx(trained["metrics"]["test"], rel=1e-5)
