"""The frozen-backbone feature cache: where its files go, how processes that share one save their rows, and when a
network's frozen backbone is cached at all."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from converge.fetch import data_dir
from converge.training.feature_cache import FEATURES_DIR_ENV, FeatureCache, FrozenFeatures, cache_path, row_key

# One of two processes that share a file (DDP ranks, the jobs of a sweep), saving at the same time: 30 times it
# opens the file, adds a row of its own and saves.
_SAVE_A_SHARD = """
import sys, time
from pathlib import Path
import numpy as np, torch
from converge.training.feature_cache import FeatureCache, row_key
path, rank = Path(sys.argv[1]), int(sys.argv[2])
(path.parent / f"ready{rank}").touch()
while not (path.parent / f"ready{1 - rank}").exists():  # both start saving together
    time.sleep(0.01)
for row in range(rank * 100, rank * 100 + 30):
    cache = FeatureCache(path)
    cache.lookup([row_key(np.array([row]))], lambda missing: torch.full((1, 4), float(row)))
    cache.save()
"""


def _rows(cache: FeatureCache, *rows: int) -> torch.Tensor:
    """The features of one input row per number, which are that number (computed when not cached)."""
    return cache.lookup([row_key(np.array([row])) for row in rows],
                        lambda missing: torch.tensor([[float(rows[position])] * 4 for position in missing]))


def test_the_features_go_under_the_data_cache_unless_their_folder_is_set(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    module = nn.Linear(2, 2)
    monkeypatch.delenv(FEATURES_DIR_ENV, raising=False)
    monkeypatch.setenv("CONVERGE_DATA_DIR", str(tmp_path / "data"))
    assert cache_path(module).parent == tmp_path / "data" / "features"
    monkeypatch.setenv(FEATURES_DIR_ENV, str(tmp_path / "features"))
    assert cache_path(module).parent == tmp_path / "features"


def test_tests_write_no_feature_into_the_users_data_cache() -> None:
    assert not cache_path(nn.Linear(2, 2)).is_relative_to(data_dir()), "a test would write into the data cache"


def test_caches_of_one_file_that_each_save_their_own_rows_keep_them_all(tmp_path: Path) -> None:
    """Two DDP ranks, each with its shard: both open the file before either saves, and neither loses a row."""
    path = tmp_path / "features.npz"
    first, second = FeatureCache(path), FeatureCache(path)
    _rows(first, 1, 2)
    _rows(second, 2, 3)
    first.save()
    second.save()
    saved = FeatureCache(path)
    assert len(saved.rows) == 3 and len(second.rows) == 3  # the rows read at the save are kept in memory too
    assert torch.equal(_rows(saved, 1, 2, 3), torch.tensor([[1.0] * 4, [2.0] * 4, [3.0] * 4]))
    assert saved.added == 0  # all of them read from the file


def test_two_processes_saving_into_one_file_at_once_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "features" / "shared.npz"
    path.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ranks = [subprocess.Popen([sys.executable, "-c", _SAVE_A_SHARD, str(path), str(rank)], env=env)
             for rank in (0, 1)]
    assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]
    assert len(FeatureCache(path).rows) == 60
    assert sorted(file.name for file in path.parent.iterdir()) == ["ready0", "ready1", "shared.npz",
                                                                  "shared.npz.lock"]  # no partial file left


def test_a_trainable_module_before_the_frozen_backbone_turns_its_cache_off_saying_why(
        caplog: pytest.LogCaptureFixture) -> None:
    """Its outputs change as it trains: an evaluation batch, even one seen before, would be a new row each epoch."""
    adapter, backbone, cached = nn.Linear(2, 4), nn.Linear(4, 3).requires_grad_(False), FrozenFeatures()
    rows = torch.rand(5, 2)
    with caplog.at_level(logging.INFO, logger="converge"):
        with torch.no_grad():
            cached.eval()(backbone, adapter(rows))  # Lightning's sanity check: validation before training
        assert len(cached.cache.rows) == 5
        cached.train()(backbone, adapter(rows)).sum().backward()  # a training batch: its inputs need a gradient
        with torch.no_grad():
            cached.eval()(backbone, adapter(rows))
    assert cached.cache is None and adapter.weight.grad is not None and backbone.weight.grad is None
    assert "outputs are not cached: its inputs need a gradient, so a module before it trains" in caplog.text
