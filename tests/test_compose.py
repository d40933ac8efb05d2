"""Every config group composes, and builds what it promises."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from converge.registry import providers_by_option
from converge.testing import compose
from converge.training.optimization import configure_optimizers

BASE = ["data=vision/digits", "model=vision/cnn"]


@pytest.mark.parametrize("hardware", sorted(providers_by_option()["hardware"]))
def test_hardware_options_compose(hardware: str) -> None:
    cfg = compose([*BASE, f"hardware={hardware}"], output_dir="/tmp/unused")
    assert {"accelerator", "devices", "strategy", "precision", "num_nodes"} <= set(cfg.trainer)


def test_ddp_cpu_is_two_gloo_processes() -> None:
    cfg = compose([*BASE, "hardware=ddp_cpu"], output_dir="/tmp/unused")
    strategy = instantiate(cfg.trainer.strategy)
    assert cfg.trainer.devices == 2 and strategy._process_group_backend == "gloo"


@pytest.mark.parametrize("scheduler", sorted(providers_by_option()["scheduler"]))
def test_scheduler_options_build_with_the_run_length(scheduler: str) -> None:
    cfg = compose([*BASE, f"scheduler={scheduler}", "monitor.metric=val/acc", "monitor.mode=max"],
                  output_dir="/tmp/unused")
    from converge.app.build import plain

    params = [torch.nn.Parameter(torch.zeros(1))]
    trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=10)
    built = configure_optimizers(plain(cfg.optim), plain(cfg.scheduler) or None, [{"params": params}], trainer)
    if scheduler == "none":
        assert isinstance(built, torch.optim.Optimizer)
        return
    lr_scheduler = built["lr_scheduler"]
    assert lr_scheduler["interval"] in ("step", "epoch")
    if scheduler == "plateau":
        assert lr_scheduler["monitor"] == "val/acc" and lr_scheduler["scheduler"].mode == "max"


def test_cosine_warms_up_then_decays_to_zero() -> None:
    from converge.training.schedules import cosine_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_with_warmup(optimizer, total_steps=100, warmup_fraction=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert max(rates) == pytest.approx(1.0) and rates[-1] < 0.01
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_experiment_overrides_compose_with_group_overrides() -> None:
    cfg = compose(["experiment=recsys/ml100k", "optim=sgd", "optim.lr=0.05", "~callbacks.early_stopping",
                   "+trainer.gradient_clip_val=1.0", "scheduler=step"], output_dir="/tmp/unused")
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.optim.lr == 0.05
    assert "early_stopping" not in cfg.callbacks and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.scheduler.schedule._target_.endswith("StepLR")


def test_callbacks_none_drops_the_settings_an_experiment_gives_its_callbacks(
        caplog: pytest.LogCaptureFixture) -> None:
    from converge.app.build import build_callbacks

    cfg = compose(["experiment=recsys/ml100k", "callbacks=none"])
    assert "patience" in cfg.callbacks.early_stopping  # the experiment's tuning is still composed in
    with caplog.at_level(logging.WARNING, logger="converge"):
        assert build_callbacks(cfg.callbacks) == []
    skipped = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(skipped) == len(cfg.callbacks)  # one warning per entry left without a callback to tune
    assert "callbacks.early_stopping has no _target_, so it builds nothing" in "\n".join(skipped)
