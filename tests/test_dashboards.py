"""TensorBoard dashboards: the custom-scalars layout and hparams of a real run, the confusion matrix
picture, and `converge tensorboard` serving a run for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from converge.diagnostics.confusion import confusion_image, confusion_table
from converge.diagnostics.dashboards import Dashboards, drawing
from converge.errors import ConfigError
from converge.testing import run_cli
from converge.testing.compose import free_port


@pytest.fixture(scope="module")
def project(tabular: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three epochs of the README plugin under outputs/ of a scratch folder (a 2-epoch convergence window,
    so that every convergence curve has points)."""
    cwd = tmp_path_factory.mktemp("project")
    done = run_cli(["train", *tabular["overrides"], "debug=smoke", "~callbacks.progress_bar", "trainer.max_epochs=3",
                    "callbacks.convergence.window=2", "task_name=houses"], cwd=cwd, env=tabular["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "houses" / "runs").iterdir()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    return {"cwd": cwd, "dir": run_dir, "events": events, "env": tabular["env"]}


def _layout(events: EventAccumulator) -> layout_pb2.Layout:
    (written,) = events.Tensors("custom_scalars__config__")  # once per run
    return layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])


def test_layout_puts_train_and_val_on_one_chart_and_every_chart_has_curves(project: dict) -> None:
    layout = _layout(project["events"])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["loss"] == ["^train/loss_epoch$", "^val/loss$", "^test/loss$"]
    assert charts["mse"] == ["^val/mse$", "^test/mse$"] and charts["mae"] == ["^val/mae$", "^test/mae$"]
    scalars = project["events"].Tags()["scalars"]
    for title, patterns in charts.items():  # a renamed tag would leave its chart empty
        for pattern in patterns:
            assert any(re.search(pattern, tag) for tag in scalars), (title, pattern, scalars)
    assert [c.title for c in layout.category] == ["train vs validation", "learning rate", "convergence"]


def test_hparams_hold_the_config_and_the_final_scores(project: dict) -> None:
    """What the HPARAMS tab compares across the runs of a sweep."""
    content = project["events"].PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {"hparams/best_val_mse", "hparams/test_mse", "hparams/test_mae"} <= {
        info.name.tag for info in experiment.metric_infos}
    assert session.hparams["optim.lr"].number_value > 0 and session.hparams["task_name"].string_value == "houses"
    final = project["events"].Scalars("hparams/test_mse")[-1].value
    metrics = json.loads((project["dir"] / "metrics.json").read_text())
    assert final == pytest.approx(metrics["test"]["test/mse"], rel=1e-6)


def test_confusion_picture_colours_each_cell_by_its_share_of_the_row() -> None:
    counts = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])  # the third class has no samples
    image = confusion_image(counts, width=300)
    assert image.shape == (300, 300, 3) and image.dtype == np.uint8

    def centre(row: int, column: int) -> list[int]:
        return image[row * 100 + 50, column * 100 + 50].tolist()

    assert centre(1, 1) == [8, 69, 148]  # all of row 1 right: full blue
    assert centre(0, 1) == [229, 140, 142]  # 1 of 4 wrong: red at sqrt(0.25) = half strength
    assert centre(0, 2) == centre(1, 0) == centre(2, 2) == [255, 255, 255]
    assert centre(0, 0)[2] > centre(0, 0)[0]  # the diagonal is blue, errors red
    assert image[0, 150].tolist() == image[100, 150].tolist() == [200, 200, 200]  # grid lines


def test_confusion_table_names_each_row_with_recall_and_worst_confusion() -> None:
    counts = np.array([[3, 1], [0, 4]])
    table = confusion_table(counts, ["cat", "dog|puppy"]).splitlines()
    assert table[2] == "| 0 | cat | 4 | 0.750 | dog\\|puppy (1) |"
    assert table[3] == "| 1 | dog\\|puppy | 4 | 1.000 | - |"


def test_dashboards_refuse_a_period_below_one_epoch() -> None:
    with pytest.raises(ConfigError, match="every_n_epochs must be >= 1"):
        Dashboards(every_n_epochs=0)


def test_drawing_gives_the_loop_back_its_mode_and_random_state() -> None:
    """A picture hook runs in eval mode without gradients, and whatever random numbers it draws (a DataLoader
    without its own generator draws its seed from torch's) must not change the training that follows."""
    task = pl.LightningModule()
    task.layer, task.frozen = torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2)
    task.train()
    task.frozen.eval()  # a part the user keeps in eval mode while the rest trains
    state = torch.random.get_rng_state()
    with drawing(task):
        assert not task.training and not task.layer.training and not torch.is_grad_enabled()
        torch.rand(8)
    assert task.training and task.layer.training and not task.frozen.training and torch.is_grad_enabled()
    assert torch.equal(torch.random.get_rng_state(), state)


def _get(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def test_converge_tensorboard_serves_the_runs_of_outputs(project: dict) -> None:
    port = free_port()
    command = [sys.executable, "-m", "converge.cli", "tensorboard", "--port", str(port)]
    board = subprocess.Popen(command, cwd=project["cwd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**project["env"], "PYTHONPROFILEIMPORTTIME": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        runs, deadline = [], time.monotonic() + 90
        while not runs and time.monotonic() < deadline:
            assert board.poll() is None, board.communicate()[1][-3000:]
            try:
                runs = json.loads(_get(f"{url}/data/runs"))
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        run_name = str((project["dir"] / "tensorboard").relative_to(project["cwd"] / "outputs"))
        assert runs == [run_name]
        layout = json.loads(_get(f"{url}/data/plugin/custom_scalars/layout"))
        assert layout["category"][0]["chart"][0]["multiline"]["tag"][1] == "^val/loss$"
        experiment = json.loads(_get(f"{url}/data/plugin/hparams/experiment", b'{"experimentName": ""}'))
        assert "hparams/best_val_mse" in {info["name"]["tag"] for info in experiment["metricInfos"]}
    finally:
        board.terminate()
        _, stderr = board.communicate(timeout=30)
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert any(name.startswith("tensorboard.") for name in imported)  # the trace of imports works
    assert not {name for name in imported if name.split(".")[0] in ("torch", "lightning")}, "imported torch"


def test_converge_tensorboard_needs_an_existing_directory(tmp_path: Path) -> None:
    done = run_cli(["tensorboard", str(tmp_path / "missing")], cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"no directory {tmp_path / 'missing'}" in done.stderr
