"""The `logger` group: MLflow, wandb (offline), TensorBoard and CSV from real runs, read back with each tool's own
reader; `logger=none`; several at once; a failed run leaves none of their folders."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from converge.testing import run_cli

DIGITS = ["experiment=vision/digits", "debug=smoke", "model.net.upsample=1", "model.net.widths=[8,16]",
          "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.dashboards", "task_name=loggers"]
LONG = "x" * 7000  # longer than MLflow accepts for a param value


def train_digits(overrides: list[str], run_dir: Path) -> dict:
    """Train in this process (as `converge train` would); the run's metrics.json."""
    from converge.app.train import train
    from converge.testing import compose

    train(compose([*DIGITS, *overrides], output_dir=run_dir))
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run with three loggers together, and a config value longer than MLflow's limit."""
    run_dir = tmp_path_factory.mktemp("logged")
    metrics = train_digits(["logger=[tensorboard,mlflow,wandb]", f"+notes={LONG}"], run_dir)
    return {"dir": run_dir, "metrics": metrics, "best": "hparams/best_" + metrics["monitor"].replace("/", "_")}


def test_mlflow_run_holds_the_flat_config_and_the_metrics(logged: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{logged['dir']}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("loggers")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["optim.lr"] == "0.003" and params["model.net.widths"] == "[8, 16]"
    assert params["notes"] == LONG[:250], "a long value is cut, not refused"
    assert not any(key.startswith(("hydra", "paths")) for key in params)
    assert {"train/loss_epoch", "val/loss", "val/acc", "test/acc", "lr-AdamW", logged["best"]} <= set(metrics)
    assert metrics["test/acc"] == pytest.approx(logged["metrics"]["test"]["test/acc"])
    assert metrics[logged["best"]] == pytest.approx(logged["metrics"]["kept"]["score"])


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline run's .wandb file (a LevelDB-style log of protobuf records; wandb has no reader)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, records, chunk = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    position = 7  # the file header: ident, magic, version
    while position + 7 <= len(data):
        if block - position % block < 7:  # too short for a record header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            records.append(Record.FromString(chunk))
            chunk = b""
    return records


def test_wandb_offline_run_holds_the_config_and_the_summary(logged: dict) -> None:
    import wandb

    assert wandb.run is None, "the run is finished at the end: the next job of a sweep starts its own"
    (run_file,) = (logged["dir"] / "wandb").glob("offline-run-*/run-*.wandb")
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        target = {"config": config, "summary": summary}.get(kind)
        for item in getattr(record, kind).update if target is not None else ():
            target[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert config["optim"]["lr"] == 0.003 and config["model"]["net"]["widths"] == [8, 16], "nested, typed"
    assert config["ckpt_path"] is None and config["notes"] == LONG
    assert "hydra" not in config and "paths" not in config
    assert {"train/loss_epoch", "val/loss", "test/acc", logged["best"]} <= set(summary)
    assert summary["test/acc"] == pytest.approx(logged["metrics"]["test"]["test/acc"])


def test_tensorboard_alongside_keeps_its_events(logged: dict) -> None:
    events = EventAccumulator(str(logged["dir"] / "tensorboard"))
    events.Reload()
    assert {"val/loss", "test/acc", "lr-AdamW", logged["best"]} <= set(events.Tags()["scalars"])


def test_a_run_without_loggers_trains_without_the_lr_monitor(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="converge"):
        metrics = train_digits(["logger=none"], tmp_path)
    assert metrics["test"]["test/acc"] >= 0
    assert "callbacks.lr_monitor is left out" in caplog.text
    assert not any((tmp_path / name).exists() for name in ("tensorboard", "csv", "mlflow", "wandb"))


def test_csv_logger_gets_the_final_scores(tmp_path: Path) -> None:
    metrics = train_digits(["logger=csv"], tmp_path)
    header, *rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    best = "hparams/best_" + metrics["monitor"].replace("/", "_")
    assert {"lr-AdamW", "val/loss", "test/acc", best} <= set(columns)
    assert float(rows[-1].split(",")[columns.index(best)]) == pytest.approx(metrics["kept"]["score"])
    assert "optim.lr: 0.003" in (tmp_path / "csv" / "hparams.yaml").read_text()


def test_a_run_failing_after_its_loggers_started_leaves_no_run_directory(tmp_path: Path) -> None:
    fail = ["+callbacks.fail._target_=converge.testing.faults.FailAt", "+callbacks.fail.epoch=0",
            "+callbacks.fail.batch=0"]
    done = run_cli(["train", *DIGITS, "logger=[mlflow,wandb]", *fail], cwd=tmp_path)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "injected failure" in output and "offline-run-" in output, "it failed in fit, with both loggers writing"
    assert not any((tmp_path / "outputs" / "loggers" / "runs").iterdir())


def test_a_failed_run_in_this_process_finishes_its_wandb_run(tmp_path: Path) -> None:
    import wandb

    fail = ["+callbacks.fail._target_=converge.testing.faults.FailAt", "+callbacks.fail.epoch=0",
            "+callbacks.fail.batch=0"]
    with pytest.raises(Exception, match="injected failure"):
        train_digits(["logger=wandb", *fail], tmp_path / "failed")
    assert wandb.run is None, "finished as failed: the next job of a sweep in this process starts its own run"
