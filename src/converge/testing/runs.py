"""Train, build and rebuild in this process, exactly as `converge train`, `eval` and `export` do: for the tests of
a plugin that check what a run leaves (dashboards, checkpoints) beyond the conformance suite."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from converge.testing.compose import compose


def train_run(overrides: Sequence[str], run_dir: str | Path) -> DictConfig:
    """Compose `converge train OVERRIDES` and train it into `run_dir` (a real Trainer; the run directory,
    checkpoints and `metrics.json` as the command writes them).

    Returns:
        The composed config it trained (its `data` node builds the same data module again).

    Example::

        cfg = train_run(["experiment=vision/digits", "debug=smoke"], tmp_path / "run")
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    """
    from converge.app.train import train

    cfg = compose(overrides, output_dir=run_dir)
    train(cfg)
    return cfg


def build_datamodule(data: DictConfig, seed: int = 0) -> Any:
    """The `DataModule` a composed `data` config builds, as training builds it (a config mistake: ConfigError).

    Example::

        data = build_datamodule(compose(["data=vision/digits"]).data)
        class_names = data.spec()["class_names"]
    """
    from converge.app.build import build_datamodule as build

    return build(data, seed)


def load_task(checkpoint: str | Path) -> Any:
    """The trained `TaskModule` of a checkpoint, rebuilt as `converge eval` and `export` rebuild it: through
    the plugin registry, from plain data (`weights_only=True`).

    Example::

        task = load_task(run_dir / "checkpoints" / "last.ckpt").eval()
    """
    from converge.app.build import load_task as load

    return load(checkpoint)[0]
