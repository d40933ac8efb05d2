"""The frozen-backbone feature cache: when a network's frozen backbone is cached at all."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from converge.training.feature_cache import FrozenFeatures


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
