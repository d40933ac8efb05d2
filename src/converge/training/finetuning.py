"""Fine-tuning strategies (the `finetune` config group): which parameters train, and at which learning rate.

Each strategy is a Lightning `BaseFinetuning` callback over the task's `backbone()` and `backbone_blocks()`
(bottom to top), and says the optimiser's parameter groups (`TaskModule.configure_optimizers` asks
`parameter_groups`). `finetune=full`, the default, is no strategy at all: everything trains at `optim.lr`.

    frozen    the backbone does not train: requires_grad off, not in the optimiser, its BatchNorm in eval mode;
              its outputs are cached (`cache_features`, see converge.training.feature_cache.FrozenFeatures)
    gradual   frozen (and cached) until `unfreeze_at_epoch`, then the backbone (or its top `blocks`) trains at
              `lr_scale` x lr
    llrd      layer-wise LR decay: block k from the top trains at decay^(k+1) x lr, the head at lr
    lora      low-rank adapters (peft) on the backbone's layers; only they and the head train; a rebuilt
              checkpoint is merged into plain weights, so eval and export see a model of the original size

Frozen BatchNorm layers stay in eval mode, so their running statistics are the pretrained ones; under `frozen`
and `gradual` so does every frozen block of the backbone (fixed features: no dropout). Each epoch logs
`finetune/trainable_params` and `finetune/frozen_params`; Lightning's model summary counts them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from converge.errors import ConfigError
from converge.training.feature_cache import frozen_features_in

LORA_KEY = "converge_lora"  # a checkpoint trained with adapters: their settings, to rebuild it


def parameter_groups(task: nn.Module) -> list[dict[str, Any]]:
    """The optimiser's parameter groups (`params`, `lr_scale`): the task's strategy's, else every trainable one.

    Args:
        task: a TaskModule, with its strategy in `task.finetuning` (None: no strategy, everything trains).

    Returns:
        Groups of parameters, each with the factor its learning rate is of `optim.lr`.
    """
    strategy = getattr(task, "finetuning", None)
    if strategy is not None:
        return strategy.parameter_groups(task)
    return [{"params": trainable(task.parameters()), "lr_scale": 1.0}]


def trainable(parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [parameter for parameter in parameters if parameter.requires_grad]


def _backbone(task: nn.Module) -> nn.Module:
    backbone = task.backbone()
    if backbone is None:
        raise ConfigError(f"{type(task).__name__} has no backbone() to fine-tune: use finetune=full")
    return backbone


def _outside(task: nn.Module, part: nn.Module) -> list[nn.Parameter]:
    """The task's trainable parameters outside `part` (the head, when `part` is the backbone)."""
    inside = {id(parameter) for parameter in part.parameters()}
    return [parameter for parameter in trainable(task.parameters()) if id(parameter) not in inside]


class FineTuning(BaseFinetuning):
    """The base of the strategies: everything that has gradients trains at `optim.lr`; frozen BatchNorm stays
    in eval mode; the trainable and frozen parameter counts are logged each epoch."""

    def prepare(self, task: nn.Module) -> Any:
        """Prepare the task (add adapters, switch its feature cache), after its pretrained weights load and before
        its optimiser is built. Nothing by default."""

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        hold_frozen_norms(pl_module)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        hold_frozen_norms(pl_module)

    def parameter_groups(self, task: nn.Module) -> list[dict[str, Any]]:
        return [{"params": trainable(task.parameters()), "lr_scale": 1.0}]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        every = sum(parameter.numel() for parameter in pl_module.parameters())
        learning = sum(parameter.numel() for parameter in trainable(pl_module.parameters()))
        pl_module.log_dict({"finetune/trainable_params": float(learning),
                            "finetune/frozen_params": float(every - learning)}, on_step=False, on_epoch=True)


class Frozen(FineTuning):
    """Only the head trains: the backbone's parameters are frozen and left out of the optimiser.

    Args:
        cache_features: compute the frozen backbone's outputs once per input and keep them (the network's
            `FrozenFeatures`); False: run it on every batch. The predictions are the same either way.
    """

    def __init__(self, cache_features: bool = True) -> None:
        super().__init__()
        self.cache_features = cache_features

    def prepare(self, task: nn.Module) -> Any:
        for features in frozen_features_in(task):
            features.enabled = self.cache_features

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(_backbone(pl_module), train_bn=False)
        hold_frozen_backbone(pl_module)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        hold_frozen_backbone(pl_module)

    def parameter_groups(self, task: nn.Module) -> list[dict[str, Any]]:
        return [{"params": _outside(task, _backbone(task)), "lr_scale": 1.0}]


def hold_frozen_norms(task: nn.Module) -> None:
    """Keep every BatchNorm whose parameters are all frozen in eval mode: its running statistics stay the
    pretrained ones (in train mode it would normalise by, and drift towards, the new data's batches)."""
    for module in task.modules():
        if isinstance(module, _BatchNorm) and not trainable(module.parameters()):
            module.eval()


def hold_frozen_backbone(task: nn.Module) -> None:
    """Keep the frozen part of the backbone in eval mode (all of it, or each of its frozen blocks), and every frozen
    BatchNorm: fixed features, whichever epoch the run started at. A run resumed after `gradual` unfroze the top
    blocks then runs the frozen ones as the run that froze them at its start did (without dropout)."""
    hold_frozen_norms(task)
    for module in [_backbone(task), *task.backbone_blocks()]:
        if not trainable(module.parameters()):
            module.eval()


class Gradual(Frozen):
    """The backbone is frozen until `unfreeze_at_epoch`, then its top `blocks` (all when None) train at
    `lr_scale` x the head's learning rate.

    Its parameters sit in their own optimiser group from the start (without gradients, the optimiser skips
    them), so the LR schedule shapes that group like the others when it starts training, and a resumed run's
    optimiser has the groups its checkpoint holds. `cache_features`: as for `Frozen`, until it unfreezes.
    """

    def __init__(self, unfreeze_at_epoch: int = 1, blocks: int | None = None, lr_scale: float = 0.1,
                 cache_features: bool = True) -> None:
        super().__init__(cache_features)
        self.unfreeze_at_epoch, self.blocks, self.lr_scale = unfreeze_at_epoch, blocks, lr_scale

    def _unfrozen(self, task: nn.Module) -> list[nn.Module]:
        if self.blocks is None:
            return [_backbone(task)]
        blocks = _blocks(task)
        return blocks[len(blocks) - self.blocks:]

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if epoch >= self.unfreeze_at_epoch:
            self.make_trainable(self._unfrozen(pl_module))
            for module in self._unfrozen(pl_module):
                module.train()
        hold_frozen_backbone(pl_module)

    def parameter_groups(self, task: nn.Module) -> list[dict[str, Any]]:
        later = [parameter for module in self._unfrozen(task) for parameter in module.parameters()]
        return [{"params": _outside(task, _backbone(task)), "lr_scale": 1.0},
                {"params": later, "lr_scale": self.lr_scale}]


def _blocks(task: nn.Module) -> list[nn.Module]:
    blocks = list(task.backbone_blocks())
    if not blocks:
        raise ConfigError(f"{type(task).__name__}.backbone_blocks() is empty: nothing to fine-tune block by block")
    return blocks


class LayerwiseDecay(FineTuning):
    """Layer-wise learning-rate decay: everything trains, block k from the top of the backbone at decay^(k+1)
    x lr and the head at lr, so the general low layers move least (ULMFiT's discriminative fine-tuning)."""

    def __init__(self, decay: float = 0.8) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"finetune.decay must be in (0, 1], got {decay}")
        self.decay = decay

    def parameter_groups(self, task: nn.Module) -> list[dict[str, Any]]:
        backbone, blocks = _backbone(task), _blocks(task)
        groups = [{"params": _outside(task, backbone), "lr_scale": 1.0}]
        placed: set[int] = set()
        for depth, block in enumerate(reversed(blocks), start=1):
            params = [p for p in trainable(block.parameters()) if id(p) not in placed]
            placed.update(id(p) for p in params)
            groups.append({"params": params, "lr_scale": self.decay**depth})
        rest = [p for p in trainable(backbone.parameters()) if id(p) not in placed]  # outside every block: lowest
        groups.append({"params": rest, "lr_scale": self.decay ** len(blocks)})
        return groups


class Lora(FineTuning):
    """Low-rank adapters (peft's LoRA) on the backbone's layers of the named types; only the adapters and the
    head train. A checkpoint keeps the adapters (resuming continues them); `merge_checkpoint_adapters` folds
    them into the weights of a task rebuilt for eval or export, so a bundle costs nothing extra.

    Args:
        r: the adapters' rank.
        alpha: their scale is alpha / r.
        dropout: dropout on the adapters' input.
        layers: the types of backbone module that get adapters (peft supports Linear, Conv2d, Embedding, ...).
    """

    def __init__(self, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 layers: Sequence[str] = ("Linear",)) -> None:
        super().__init__()
        self.settings = {"r": r, "alpha": alpha, "dropout": dropout, "layers": list(layers)}

    def prepare(self, task: nn.Module) -> Any:
        from peft import LoraConfig, LoraModel

        backbone = _backbone(task)
        kinds = self.settings["layers"]
        targets = [name for name, module in backbone.named_modules() if type(module).__name__ in kinds]
        if not targets:
            raise ConfigError(f"finetune=lora: the backbone of {type(task).__name__} has no layer of the types "
                              f"{self.settings['layers']} (finetune.layers)")
        config = LoraConfig(r=self.settings["r"], lora_alpha=self.settings["alpha"],
                            lora_dropout=self.settings["dropout"], target_modules=targets)
        return LoraModel(backbone, config, "default")  # adds the adapters to `backbone` in place, freezes the rest

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[LORA_KEY] = dict(self.settings)


def merge_checkpoint_adapters(task: nn.Module, checkpoint: dict[str, Any]) -> Any:
    """For a checkpoint trained with `finetune=lora`: add the adapters to the freshly built `task` (so the
    checkpoint's state dict loads into it) and return the function that then merges them into plain weights
    (peft's `merge_and_unload`); None for a checkpoint without adapters."""
    settings = checkpoint.get(LORA_KEY)
    return None if settings is None else Lora(**settings).prepare(task).merge_and_unload
