"""Checkpoints are written whole or not at all: a full disk (a real tmpfs) is one clear error, never a half file."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from converge.errors import CheckpointError
from converge.testing import run_cli
from converge.training.checkpoint_io import AtomicCheckpointIO

# Digits' default CNN: a checkpoint (weights and Adam's moments) of 3.4 MiB, so that a 9,000 KiB disk holds the
# first epoch's two checkpoints (best and last) and the run's small files, and fills at the second epoch's.
DIGITS = ["experiment=vision/digits", "debug=smoke", "model.net.upsample=1", "~callbacks.progress_bar",
          "~callbacks.model_summary", "~callbacks.dashboards", "monitor.keep=best", "trainer.max_epochs=3"]


def _mount_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "disk", "9000k")


def test_a_write_that_fills_the_disk_is_one_clear_error_and_leaves_the_old_file(small_disk: Path) -> None:
    path = small_disk / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError, match="no space left on device") as raised:
        io.save_checkpoint({"step": torch.zeros(3_000_000)}, path)  # 12 MB on a 9 MB disk
    assert str(path) in str(raised.value)
    assert torch.equal(torch.load(path, weights_only=True)["step"], torch.zeros(10))  # the previous file, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left


def test_a_run_that_fills_its_disk_ends_in_one_message_and_leaves_loadable_checkpoints(small_disk: Path,
                                                                                       tmp_path: Path) -> None:
    done = run_cli(["train", *DIGITS, f"paths.output_root={small_disk}", "task_name=full"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (message,) = [line for line in done.stderr.splitlines() if line.startswith("converge: error:")]
    assert "no space left on device" in message and f"{small_disk}/full/runs/" in message and ".ckpt" in message
    left = sorted(small_disk.glob("full/runs/*/checkpoints/*"))
    assert {p.name for p in left} == {"best-epoch000.ckpt", "last.ckpt"}, left  # epoch 0's; nothing partial
    for checkpoint in left:
        assert torch.load(checkpoint, weights_only=True)["epoch"] == 0
    assert not list(small_disk.glob("full/runs/*/metrics.json"))  # the run did not finish
