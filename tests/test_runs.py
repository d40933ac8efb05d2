"""Whole runs through `converge train` and `converge eval`, read back from the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from converge.testing import run_cli

SMOKE = ["debug=smoke", "~callbacks.progress_bar"]


@pytest.fixture(scope="module")
def run(tabular: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three epochs of the README plugin, under outputs/ of a scratch folder, as a user would run it."""
    cwd = tmp_path_factory.mktemp("project")
    done = run_cli(["train", *tabular["overrides"], *SMOKE, "trainer.max_epochs=3", "task_name=houses"],
                   cwd=cwd, env=tabular["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "houses" / "runs").iterdir()
    return {"cwd": cwd, "dir": run_dir, "metrics": json.loads((run_dir / "metrics.json").read_text()),
            "env": tabular["env"], "overrides": tabular["overrides"]}


def test_run_directory_layout(run: dict) -> None:
    run_dir, metrics = run["dir"], run["metrics"]
    assert {p.name for p in run_dir.iterdir()} >= {".hydra", "checkpoints", "tensorboard", "metrics.json",
                                                  "train.log"}
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert metrics["epochs_trained"] == 3 and metrics["world_size"] == 1
    assert Path(metrics["kept"]["checkpoint"]).parent == run_dir / "checkpoints"
    assert torch.load(metrics["kept"]["checkpoint"], weights_only=True)["epoch"] == metrics["kept"]["epoch"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert "best val/mse" in (run_dir / "train.log").read_text()


def test_tensorboard_events_hold_losses_metrics_lr_and_hparams(run: dict) -> None:
    events = EventAccumulator(str(run["dir"] / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_epoch", "val/loss", "val/mse", "val/mae", "test/mse", "lr-AdamW"} <= scalars
    assert len(events.Scalars("val/mse")) == 3
    lrs = [event.value for event in events.Scalars("lr-AdamW")]
    assert lrs[0] != lrs[-1], "the cosine schedule changes the learning rate"
    hparams_files = list((run["dir"] / "tensorboard").glob("events.out.tfevents.*"))
    assert any(b"hparams/best_val_mse" in path.read_bytes() for path in hparams_files)


def test_resume_with_last_continues_the_latest_run_in_its_folder(run: dict, tmp_path: Path) -> None:
    train = ["train", *run["overrides"], *SMOKE, "task_name=houses"]  # its own run: resuming changes a run
    assert run_cli([*train, "trainer.max_epochs=2"], cwd=tmp_path, env=run["env"]).returncode == 0
    (first,) = (tmp_path / "outputs" / "houses" / "runs").iterdir()
    done = run_cli([*train, "trainer.max_epochs=3", "ckpt_path=last"], cwd=tmp_path, env=run["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr + done.stdout
    assert f"resuming from {first.relative_to(tmp_path)}" in log and "dirpath has changed" not in log
    assert list((tmp_path / "outputs" / "houses" / "runs").iterdir()) == [first]
    resumed = json.loads((first / "metrics.json").read_text())
    assert resumed["epochs_trained"] == 3
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    (best,) = (first / "checkpoints").glob("best-*.ckpt")  # still one best, chosen over all 3 epochs
    assert str(best) == resumed["kept"]["checkpoint"]


def test_eval_of_the_best_checkpoint_reproduces_its_test_metrics(run: dict) -> None:
    done = run_cli(["eval", "ckpt_path=best", "task_name=houses", "+trainer.limit_test_batches=2"],
                   cwd=run["cwd"], env=run["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    (eval_dir,) = (run["cwd"] / "outputs" / "houses" / "evals").iterdir()
    result = json.loads((eval_dir / "metrics.json").read_text())
    assert result["checkpoint"] == run["metrics"]["kept"]["checkpoint"], "best: the checkpoint the run kept"
    assert result["metrics"] == pytest.approx(run["metrics"]["test"], rel=1e-5)


def test_best_is_the_kept_checkpoint_of_the_newest_finished_run(tmp_path: Path) -> None:
    from converge.errors import CheckpointError
    from converge.summary import KeptCheckpoint, RunSummary
    from converge.training.checkpoint_io import resolve_checkpoint

    def finished(folder: str, kept: str | None) -> None:
        summary = RunSummary(task_name=tmp_path.name, monitor="val/loss", mode="min", keep="best",
                             kept=KeptCheckpoint(checkpoint=kept), last_checkpoint=None, epochs_trained=1, world_size=1)
        metrics = summary.write(tmp_path / folder)
        stamp = 1_700_000_000 + int(folder.split("-")[2][:2]) * 86_400  # one day per folder: ordered by time
        os.utime(metrics, (stamp, stamp))

    with pytest.raises(CheckpointError, match="ckpt_path=best: no finished run under"):
        resolve_checkpoint("best", tmp_path.parent, tmp_path.name)
    kept = tmp_path / "best-epoch003.ckpt"
    kept.write_bytes(b"")
    finished("runs/2026-01-01_00-00-00", str(tmp_path / "older.ckpt"))
    finished("multiruns/2026-01-02_00-00-00/0", str(kept))
    finished("evals/2026-01-03_00-00-00", None)  # `converge eval`'s own metrics.json: not a training run
    assert resolve_checkpoint("best", tmp_path.parent, tmp_path.name) == kept
    finished("runs/2026-01-04_00-00-00", str(tmp_path / "deleted.ckpt"))
    with pytest.raises(CheckpointError, match="kept no checkpoint that still exists"):
        resolve_checkpoint("best", tmp_path.parent, tmp_path.name)


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_errors_are_clear_and_leave_nothing(run: dict, tmp_path: Path) -> None:
    from converge.errors import CheckpointError
    from converge.training.checkpoint_io import read_checkpoint, resolve_checkpoint

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(tmp_path / "pwned")}, unsafe)
    cases = {tmp_path / "missing.ckpt": "checkpoint not found", corrupt: "not a readable checkpoint",
             unsafe: "refusing to load"}
    for path, message in cases.items():  # what train, eval and export read every checkpoint through
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(resolve_checkpoint(str(path), tmp_path / "outputs", "any"))
    # a readable checkpoint whose weights another version of the plugin wrote: every differing key named
    other = tmp_path / "other_version.ckpt"
    checkpoint = torch.load(run["dir"] / "checkpoints" / "last.ckpt", weights_only=True)
    renamed = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][f"{renamed}_v2"] = checkpoint["state_dict"].pop(renamed)
    torch.save(checkpoint, other)
    cases[other] = f"missing        {renamed}"
    # ... and what a user sees of it: one message, exit code 2, no run directory (a process each: the CLI's path)
    # and a sound checkpoint evaluated on data of another plugin
    last = run["dir"] / "checkpoints" / "last.ckpt"
    train = ["train", *run["overrides"], *SMOKE]
    for command, path, message in ((train, corrupt, cases[corrupt]), (["eval"], unsafe, cases[unsafe]),
                                   (train, other, cases[other]), (["eval"], other, cases[other]),
                                   (["eval", "data=vision/digits"], last, "not the kind of data")):
        done = run_cli([*command, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"], env=run["env"])
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "run").exists()
        if path == other:
            assert f"unexpected     {renamed}_v2" in done.stderr
    assert not (tmp_path / "pwned").exists(), "loading a checkpoint ran code from it"
    done = run_cli(["eval", "ckpt_path=last", "task_name=nothing-here"], cwd=tmp_path, env=run["env"])
    assert done.returncode == 2 and "no checkpoints/last.ckpt under outputs/nothing-here" in done.stderr


def test_seeded_deterministic_runs_give_identical_weights(tabular: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from converge.app.train import train
    from converge.testing import compose

    monkeypatch.syspath_prepend(str(tabular["site"]))
    weights = []
    for name in ("first", "second"):
        cfg = compose([*tabular["overrides"], *SMOKE, "trainer.deterministic=true", "seed=7",
                       "+trainer.gradient_clip_val=0.5"], output_dir=tmp_path / name)
        train(cfg)
        weights.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_eval_data_of_another_layout_is_refused_where_the_specs_part() -> None:
    """A fastText checkpoint on MiniLM word pieces: the same top-level keys, another tokenizer under them (it scored
    chance, silently); the values (another vocabulary, other classes) are the plugin's business."""
    from converge.app.evaluate import check_same_kind
    from converge.errors import ConfigError

    words = {"num_ids": 9, "tokenizer": {"kind": "words", "vocabulary": ["a", "b"]}}
    pieces = {"num_ids": 9, "tokenizer": {"kind": "wordpiece", "definition": {"model": {"vocab": {"a": 0, "##b": 1}}}}}
    check_same_kind({"num_ids": 3, "tokenizer": {"kind": "words", "vocabulary": ["c"]}}, words, "TextClassifier")
    with pytest.raises(ConfigError, match=r"differ in tokenizer\.definition, tokenizer\.vocabulary\)"):
        check_same_kind(pieces, words, "TextClassifier")
