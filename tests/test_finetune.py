"""Fine-tuning strategies (`finetune=...`) on a real Lightning Trainer: what trains, at which LR, in which mode."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.nn.modules.batchnorm import _BatchNorm

from converge.app.build import build_datamodule, build_task, load_task
from converge.app.transfer import prepare_transfer
from converge.errors import ConfigError
from converge.testing import compose
from converge.testing.dashboards import read_events
from converge.training.finetuning import LORA_KEY, Frozen, merge_checkpoint_adapters

DIGITS = ["data=vision/digits", "model=vision/cnn", "model.net.widths=[8,16]", "scheduler=none"]
SMOKE = ["debug=smoke", "hardware=cpu", "~callbacks.progress_bar", "~callbacks.model_summary"]


class NormModes(pl.Callback):
    """The training mode of every frozen BatchNorm at each training step."""

    def __init__(self) -> None:
        self.modes: set[bool] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.modes |= {m.training for m in pl_module.backbone().modules()
                       if isinstance(m, _BatchNorm) and not m.weight.requires_grad}


def _fit(tmp_path: Path, *overrides: str, epochs: int = 1):
    cfg = compose([*DIGITS, *overrides], output_dir=tmp_path / "run")
    datamodule = build_datamodule(cfg.data)
    task = build_task(cfg, datamodule.spec())
    start = {key: value.clone() for key, value in task.state_dict().items()}
    modes = NormModes()
    trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*prepare_transfer(cfg, task), modes])
    trainer.fit(task, datamodule=datamodule)
    changed = {key for key, value in task.state_dict().items() if not torch.equal(value, start[key])}
    return task, trainer, changed, modes.modes


def test_frozen_trains_only_the_head_and_keeps_batchnorm_statistics(tmp_path: Path) -> None:
    task, trainer, changed, modes = _fit(tmp_path, "finetune=frozen")
    assert changed == {"net.head.3.weight", "net.head.3.bias"}  # running_mean/var of the backbone included
    assert modes == {False}, "a frozen BatchNorm trained in train mode"
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(task.net.head[3].weight), id(task.net.head[3].bias)}
    summary = ModelSummary(task)
    assert summary.trainable_parameters == 16 * 10 + 10
    assert trainer.callback_metrics["finetune/trainable_params"] == 170
    assert trainer.callback_metrics["finetune/frozen_params"] == summary.total_parameters - 170


def test_gradual_unfreezes_the_top_blocks_at_their_epoch_with_their_own_lr(tmp_path: Path) -> None:
    task, trainer, changed, _ = _fit(tmp_path, "finetune=gradual", "finetune.unfreeze_at_epoch=1",
                                     "finetune.blocks=1", "finetune.lr_scale=0.25", epochs=2)
    bottom, top = task.backbone_blocks()
    assert not any(key.startswith("net.features.") and int(key.split(".")[2]) < len(bottom) for key in changed)
    assert {f"net.features.{len(bottom)}.weight", "net.head.3.weight"} <= changed
    head, backbone = trainer.optimizers[0].param_groups
    assert backbone["lr"] == pytest.approx(0.25 * head["lr"])
    assert all(p.requires_grad for p in top.parameters()) and not any(p.requires_grad for p in bottom.parameters())


def test_gradual_keeps_the_backbone_still_before_its_epoch(tmp_path: Path) -> None:
    _, _, changed, modes = _fit(tmp_path, "finetune=gradual", "finetune.unfreeze_at_epoch=5")
    assert changed == {"net.head.3.weight", "net.head.3.bias"} and modes == {False}


def test_layerwise_decay_gives_each_block_from_the_top_a_smaller_lr(tmp_path: Path) -> None:
    task, trainer, changed, _ = _fit(tmp_path, "finetune=llrd", "finetune.decay=0.5", "optim.lr=0.01")
    lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])  # head, top block, bottom block (nothing outside a block)
    assert "net.features.0.weight" in changed


def test_one_cycle_peaks_each_group_at_its_own_lr(tmp_path: Path) -> None:
    _, trainer, _, _ = _fit(tmp_path, "finetune=llrd", "finetune.decay=0.5", "optim.lr=0.01", "scheduler=onecycle")
    peaks = [group["max_lr"] for group in trainer.optimizers[0].param_groups]
    assert peaks == pytest.approx([0.01, 0.005, 0.0025])


def test_a_task_without_backbone_cannot_be_frozen() -> None:
    class Plain(torch.nn.Linear):
        def backbone(self):
            return None

    with pytest.raises(ConfigError, match="no backbone"):
        Frozen().parameter_groups(Plain(2, 2))


def test_lora_adapters_merge_into_the_weights_they_change(tmp_path: Path) -> None:
    cfg = compose(DIGITS, output_dir=tmp_path / "run")
    task = build_task(cfg, build_datamodule(cfg.data).spec()).eval()
    plain_keys = set(task.state_dict())
    merge = merge_checkpoint_adapters(task, {LORA_KEY: {"r": 2, "alpha": 4, "dropout": 0.0, "layers": ["Conv2d"]}})
    adapters = {key for key in task.state_dict() if "lora_" in key}
    assert adapters and not any(p.requires_grad for key, p in task.named_parameters() if "base_layer" in key)
    with torch.no_grad():
        for key, parameter in task.named_parameters():
            if "lora_B" in key:
                parameter.normal_()
        images = torch.rand(4, 1, 8, 8)
        adapted = task(images)
        merge()
        assert set(task.state_dict()) == plain_keys
        assert torch.allclose(task(images), adapted, atol=1e-4)


def test_a_lora_run_exports_a_bundle_of_the_plain_model(tmp_path: Path) -> None:
    from converge.app.export import export
    from converge.app.train import train

    train(compose([*DIGITS, *SMOKE, "finetune=lora", "finetune.layers=[Conv2d]"], output_dir=tmp_path / "run"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)[LORA_KEY]["layers"] == ["Conv2d"]
    task, _ = load_task(checkpoint)
    plain = build_task(compose(DIGITS, output_dir=tmp_path / "plain"), task.spec)
    assert set(task.state_dict()) == set(plain.state_dict())
    events = read_events(tmp_path / "run")
    assert events.Scalars("finetune/trainable_params")[-1].value < events.Scalars("finetune/frozen_params")[-1].value
    bundle = export(compose([f"ckpt_path={checkpoint}"], output_dir=tmp_path / "export", config_name="export"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["formats"]["onnx"]["max_abs_diff"] < 1e-3


def test_a_gradual_run_resumed_after_its_unfreeze_epoch_goes_on_as_if_never_stopped(tmp_path: Path) -> None:
    """Stopped in epoch 2, after the top block unfroze in epoch 1, and resumed from last.ckpt: the block trains
    again, in the optimiser groups the checkpoint holds, at the schedule's LRs: the weights of an unbroken run."""
    from converge.app.train import train
    from converge.errors import DataError

    gradual = ["data=vision/digits", "model=vision/cnn", "model.net.widths=[8,16]", *SMOKE, "trainer.max_epochs=3",
               "trainer.deterministic=true", "logger=none", "test_after_fit=false", "finetune=gradual",
               "finetune.unfreeze_at_epoch=1", "finetune.blocks=1"]
    stop = ["+callbacks.stop._target_=converge.testing.faults.FailAt", "+callbacks.stop.epoch=2",
            "+callbacks.stop.batch=0"]
    train(compose(gradual, output_dir=tmp_path / "unbroken"))
    with pytest.raises(DataError, match="injected failure"):
        train(compose([*gradual, *stop], output_dir=tmp_path / "stopped"))
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    train(compose([*gradual, f"ckpt_path={last}"], output_dir=tmp_path / "stopped"))
    unbroken, resumed = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
                         for run in ("unbroken", "stopped"))
    assert resumed["epoch"] == unbroken["epoch"] == 2
    assert [key for key in unbroken["state_dict"] if not torch.equal(unbroken["state_dict"][key],
                                                                      resumed["state_dict"][key])] == []
    assert ([group["lr"] for group in resumed["optimizer_states"][0]["param_groups"]]
            == [group["lr"] for group in unbroken["optimizer_states"][0]["param_groups"]])
