"""Cross-validation: `converge train cv.folds=K` runs the K folds as one multirun and writes their summary."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from converge.errors import ConfigError
from converge.testing import run_cli

TINY = ["experiment=vision/digits", "debug=smoke", "model.net.upsample=1", "model.net.widths=[8,16]",
        "~callbacks.progress_bar", "~callbacks.model_summary", "task_name=cv"]


def test_vision_folds_partition_the_training_split_and_keep_test() -> None:
    from converge_vision.data import ImageClassificationData
    from converge_vision.sources import Digits

    def split(**folds: int) -> dict[str, np.ndarray]:
        data = ImageClassificationData(Digits(), **folds)
        return {name: indices for name, (_, indices) in data._split().items()}

    plain = split()
    folds = [split(num_folds=3, fold=k) for k in range(3)]
    pool = np.sort(np.concatenate([plain["train"], plain["val"]]))
    vals = [f["val"] for f in folds]
    assert np.array_equal(np.sort(np.concatenate(vals)), pool), "the validation folds cover the training split"
    assert sum(len(v) for v in vals) == len(pool), "and are disjoint"
    for fold in folds:
        assert np.array_equal(np.sort(np.concatenate([fold["train"], fold["val"]])), pool)
        assert np.array_equal(fold["test"], plain["test"])
    with pytest.raises(ConfigError, match="data.fold=3"):
        ImageClassificationData(Digits(), num_folds=3, fold=3)


def test_cv_trains_every_fold_and_writes_mean_and_std(tmp_path: Path) -> None:
    done = run_cli(["train", "cv.folds=2", *TINY], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "cv" / "multiruns").iterdir()
    runs = [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
    for job in ("0", "1"):
        overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert f"data.fold={job}" in overrides and "data.num_folds=2" in overrides
    summary = json.loads((sweep / "cv.json").read_text())
    assert summary["folds"] == summary["completed"] == 2
    best = summary["metrics"]["last-epoch val/loss"]
    scores = [run["kept"]["score"] for run in runs]
    assert best["mean"] == pytest.approx(statistics.fmean(scores))
    assert best["std"] == pytest.approx(statistics.stdev(scores))
    accuracies = [run["test"]["test/acc"] for run in runs]
    assert summary["metrics"]["test/acc"]["mean"] == pytest.approx(statistics.fmean(accuracies))
    table = (sweep / "cv.md").read_text()
    assert "| last-epoch val/loss |" in table and "| test/acc |" in table
    assert "Cross-validation: 2 of 2 folds" in done.stdout


@pytest.mark.parametrize(("extra", "message"), [
    (["-m"], "drop -m"),
    (["optim.lr=0.001,0.003"], "cannot be combined with a sweep"),
    (["data.fold=1"], "sets data.num_folds and data.fold itself"),
])
def test_cv_spelling_mistakes_are_clear_errors(extra: list[str], message: str, tmp_path: Path) -> None:
    done = run_cli(["train", "cv.folds=2", *TINY, *extra], cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_cv_of_data_without_folds_is_refused_before_any_job(tabular: dict, tmp_path: Path) -> None:
    done = run_cli(["train", "cv.folds=3", *tabular["overrides"], "task_name=nofolds"], cwd=tmp_path,
                   env=tabular["env"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a data module that supports folds" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_recsys_folds_need_the_kfold_protocol() -> None:
    from converge_recsys.splits import split

    users = np.arange(100) % 10
    parts = split("kfold", users, None, val_fraction=0.1, test_fraction=0.1, num_folds=5, fold=2, seed=0)
    assert len(parts["test"]) == 20
    with pytest.raises(ConfigError, match="data.split=kfold"):
        split("random", users, None, val_fraction=0.1, test_fraction=0.1, num_folds=5, fold=2, seed=0)
