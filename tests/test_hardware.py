"""hardware.threads: torch's intra-op threads, from config or from the cores the process may use."""

from __future__ import annotations

import os

import pytest
import torch

from converge.app.build import use_threads
from converge.testing import compose


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_from_config_and_by_default_the_allowed_cores_shared_by_cpu_ranks() -> None:
    allowed = len(os.sched_getaffinity(0))
    assert use_threads(compose(["experiment=vision/digits", "hardware.threads=3"])) == 3 == torch.get_num_threads()
    assert use_threads(compose(["experiment=vision/digits"])) == allowed
    assert use_threads(compose(["experiment=vision/digits", "hardware=ddp_cpu"])) == max(1, allowed // 2)


def test_the_monitor_is_the_tasks_own_and_its_mode_follows_the_metric() -> None:
    config = compose(["data=vision/digits", "model=vision/cnn"])
    assert (config.monitor.metric, config.monitor.mode) == ("val/acc", "max")
    for metric, mode in [("val/loss", "min"), ("train/loss_epoch", "min"), ("val/f1", "max"), ("val/ndcg@10", "max"),
                         ("val/rmse", "min")]:  # another metric brings its own direction, not the task's max
        assert compose(["data=vision/digits", "model=vision/cnn", f"monitor.metric={metric}"]).monitor.mode == mode
