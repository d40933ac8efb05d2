"""TaskModule: the LightningModule every plugin task derives from.

A task says how to run its network (`forward`, export-safe: tensors in,
tensors out), its loss and its metrics; the base class does the rest the same
way for every domain: the train/val/test steps and their logging under
`train/`, `val/` and `test/`, the optimiser and LR schedule from config, and
what a checkpoint must hold to be rebuilt later. (A task that overrides an epoch hook,
`on_train_epoch_start`/`_end` or `on_validation_epoch_end`/`on_test_epoch_end`, calls super():
the base class logs the epoch's loss and metrics there.) Its constructor takes only
plain data (configs, the data spec), never nn.Modules, so every checkpoint
loads with `weights_only=True` (lightning-hydra-template #456, Lightning #11494).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection

from converge.training.finetuning import parameter_groups
from converge.training.optimization import configure_optimizers

CHECKPOINT_KEY = "converge"


class TaskModule(pl.LightningModule, ABC):
    """Base of plugin tasks.

    Args:
        spec: what the data module measured and the task needs to build itself and
            to preprocess at inference (classes, shapes, normalisation, vocabulary), plain JSON.
        optim: a partial optimiser config (the `optim` group).
        scheduler: the `scheduler` group (None or empty for a constant LR).
        data: the data config this task was trained on, kept so eval and export can rebuild it.
    """

    monitor: ClassVar[str] = "val/loss"  # the validation metric early stopping and checkpoints follow
    mode: ClassVar[str] = "min"
    # The trivial predictor, fitted on the training targets, that a run must beat not to be "underfitting":
    # "class_prior" (the training class frequencies: majority-class accuracy), "mean" (the mean target), or None.
    baseline: ClassVar[str | None] = None
    input_names: ClassVar[tuple[str, ...]] = ("inputs",)  # forward's inputs, in order (see `export_inputs`)
    output_names: ClassVar[tuple[str, ...]] = ("outputs",)

    def __init__(
        self,
        spec: Mapping[str, Any],
        optim: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # collects the subclass's arguments too
        self.spec = dict(spec)
        metrics = self.build_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._reset_train_loss()

    # -- what a task implements ---------------------------------------------------------------
    @abstractmethod
    def build_metrics(self) -> MetricCollection:
        """The task's metrics (torchmetrics), logged as val/<name> and test/<name>."""

    @abstractmethod
    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training objective for the network's outputs."""

    def regularization(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | float:
        """A term added to the training loss (train/loss includes it), from the batch's inputs: none by default
        (recommenders penalise the embedding rows a batch uses)."""
        return 0.0

    def split_batch(self, batch: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(model inputs, target) of a batch; by default the target is the last element."""
        *inputs, target = batch
        return tuple(inputs), target

    # -- export hooks ---------------------------------------------------------------------------
    def export_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The exported model's named inputs, in its forward order, for a batch of this task's forward inputs.

        The same tensors under `input_names` by default. Override, with `for_export` and `forward_inputs`,
        where a faster graph takes another layout than training does (text serves bags of ids, flat ids plus
        offsets, rather than padded rows)."""
        return dict(zip(self.input_names, inputs, strict=True))

    def forward_inputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The inverse of `export_inputs`: forward's inputs for a batch laid out as the bundle takes it
        (`converge bench` runs eager on the runtime's own batches this way)."""
        return tuple(inputs.values())

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axes of each exported input that vary at inference, by symbolic name: the batch axis unless
        overridden (a text task adds {1: "sequence"}). Axes sharing a name must have equal sizes."""
        return {name: {0: "batch"} for name in self.input_names}

    def example_input(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The forward inputs of a real batch, cut to 2 rows: what export traces (never 1 row, which
        would freeze the batch axis)."""
        inputs, _ = self.split_batch(batch)
        return tuple(tensor[:2] for tensor in inputs)

    def for_export(self) -> torch.nn.Module:
        """The module the exporters trace (called with `export_inputs`), made from an eval-mode copy of the
        task: the task itself by default.

        Override to swap a module built for training for an equivalent one that exports to a faster graph
        (NeMo swaps export-hostile modules the same way). Every exported format is still verified against
        this eager task, so a swap that changes the answers fails the export."""
        return self

    def input_spec(self, example: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Names, dtypes and shapes (symbolic where dynamic) of the exported inputs, for the bundle manifest."""
        axes = self.dynamic_axes()
        return [{"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                 "shape": [axes.get(name, {}).get(axis, size) for axis, size in enumerate(tensor.shape)]}
                for name, tensor in example.items()]

    # -- dashboards (converge.diagnostics.dashboards) -------------------------------------------
    def log_pictures(self, writer: Any, step: int) -> None:
        """Pictures of the model on validation data for TensorBoard (a confusion matrix, predicted samples:
        `writer` is a SummaryWriter), drawn every few epochs and when fitting ends. Runs in eval mode without
        gradients, on every rank (only rank 0's writer writes). None by default."""

    def log_final_pictures(self, writer: Any, step: int) -> None:
        """Views too costly to repeat (an embedding projector), drawn once when fitting ends. None by default."""

    # -- the shared loop ------------------------------------------------------------------------
    def _shared_step(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
        inputs, target = self.split_batch(batch)
        outputs = self(*inputs)
        loss = self.compute_loss(outputs, target)
        size = len(target)
        if stage == "train":
            loss = loss + self.regularization(inputs)
            self._log_train_loss(loss, size)
            return loss
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(outputs, target)  # logged once, when the epoch ends
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True, batch_size=size)
        return loss

    def _log_train_loss(self, loss: torch.Tensor, size: int) -> None:
        """train/loss_step on the steps the loggers write, train/loss_epoch (the batch-size weighted mean) at the
        end of the epoch: the curves of `self.log("train/loss", on_step=True, on_epoch=True)` without its cost
        of about a millisecond a step (Lightning moves its result collection to the device on every call)."""
        self._train_loss_sum = self._train_loss_sum + loss.detach().float() * size  # a tensor: no sync per step
        self._train_loss_count += size
        trainer = self._trainer
        if trainer is not None and (trainer._logger_connector.should_update_logs or trainer.fast_dev_run):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)

    def _reset_train_loss(self) -> None:
        self._train_loss_sum: torch.Tensor | float = 0.0
        self._train_loss_count = 0

    def on_train_epoch_start(self) -> None:
        self._reset_train_loss()

    def on_train_epoch_end(self) -> None:
        if self._train_loss_count:  # nothing when a subclass's own training_step logs its loss
            self.log("train/loss_epoch", self._train_loss_sum / self._train_loss_count, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics, on_epoch=True)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self.hparams.optim, self.hparams.scheduler, parameter_groups(self), self.trainer)

    # -- transfer learning (converge.training.pretrained, converge.training.finetuning) ---------
    finetuning: Any = None  # the run's `finetune` strategy, set by the train recipe; None: everything trains

    def backbone(self) -> torch.nn.Module | None:
        """The pretrained part of the network: where `pretrained` weights load by default, what `finetune=frozen`
        freezes and `lora` adapts. Everything else (the head) is new for the task and always trains.

        Returns:
            A sub-module of the task, or None (the default) for a task without a pretrained part.

        Example::

            def backbone(self):
                return self.encoder
        """
        return None

    def backbone_blocks(self) -> list[torch.nn.Module]:
        """The backbone's blocks, bottom (input) to top: the units of `finetune=llrd` (an LR per block) and of
        `finetune=gradual` with `blocks` (the top N unfreeze). By default its children that hold parameters.

        Returns:
            Sub-modules of `backbone()`, in order; empty without a backbone.

        Example::

            def backbone_blocks(self):
                return [self.encoder.embeddings, *self.encoder.layer]
        """
        backbone = self.backbone()
        children = backbone.children() if backbone is not None else ()
        return [child for child in children if next(child.parameters(), None) is not None]

    # -- checkpoints ----------------------------------------------------------------------------
    @classmethod
    def import_path(cls) -> str:
        return f"{cls.__module__}:{cls.__qualname__}"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Which class to rebuild: `converge eval/export` resolve it through the plugin registry.
        checkpoint[CHECKPOINT_KEY] = {"task": self.import_path()}
