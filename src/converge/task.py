"""TaskModule: the LightningModule every plugin task derives from.

A task says how to run its network (`forward`, export-safe: tensors in,
tensors out), its loss and its metrics; the base class does the rest the same
way for every domain: the train/val/test steps and their logging under
`train/`, `val/` and `test/`, the optimiser and LR schedule from config, and
what a checkpoint must hold to be rebuilt later. (A task that overrides an epoch hook,
`on_train_epoch_start`/`_end` or `on_validation_epoch_end`/`on_test_epoch_end`, calls super():
the base class logs the epoch's loss and metrics there, and writes its frozen backbone's
feature cache.) Its constructor takes only plain data (configs, the data spec), never
nn.Modules, so every checkpoint loads with `weights_only=True` (lightning-hydra-template #456,
Lightning #11494).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection

from converge.training.feature_cache import frozen_features_in
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
        """The task's metrics, built once in `__init__` and cloned for validation and test.

        Returns:
            A torchmetrics `MetricCollection`, updated with (outputs, target) and logged as `val/<name>` and
            `test/<name>`; `monitor` names one of them.

        Example::

            def build_metrics(self):
                return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        """

    @abstractmethod
    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training objective, also logged as `val/loss` and `test/loss`.

        Args:
            outputs: what `forward` returned for the batch's inputs.
            target: the batch's target (see `split_batch`).

        Returns:
            A scalar tensor.

        Example::

            def compute_loss(self, outputs, target):
                return F.cross_entropy(outputs, target)
        """

    def regularization(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | float:
        """A term added to the training loss (`train/loss` includes it, `val/loss` does not): none by default.
        Recommenders penalise the embedding rows a batch uses, rather than weight-decaying whole tables.

        Args:
            inputs: the batch's model inputs (the first element of `split_batch`).

        Returns:
            A scalar tensor, or 0.0.

        Example::

            def regularization(self, inputs):
                user, item = inputs
                return self.l2 * (self.users(user).pow(2).sum() + self.items(item).pow(2).sum())
        """
        return 0.0

    def split_batch(self, batch: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Which elements of a batch are forward's inputs and which is the target.

        Args:
            batch: what the data module's loaders yield.

        Returns:
            (model inputs, in forward's order; target). By default the target is the last element.

        Example::

            def split_batch(self, batch):
                images, labels, _weights = batch
                return (images,), labels
        """
        *inputs, target = batch
        return tuple(inputs), target

    # -- export hooks ---------------------------------------------------------------------------
    def export_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The exported model's named inputs for a batch of forward's inputs. Override, with `for_export` and
        `forward_inputs`, where a faster graph takes another layout than training (text serves bags of ids,
        flat ids plus offsets, rather than padded rows).

        Args:
            inputs: forward's inputs, in order.

        Returns:
            Name -> tensor, in the exported graph's input order: the same tensors under `input_names` by default.

        Example::

            def export_inputs(self, inputs):
                (ids,) = inputs
                return {"token_ids": ids[ids != 0], "offsets": offsets_of(ids)}
        """
        return dict(zip(self.input_names, inputs, strict=True))

    def forward_inputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The inverse of `export_inputs` (`converge bench` runs eager on the runtime's own batches this way).

        Args:
            inputs: a batch laid out as the bundle takes it.

        Returns:
            forward's inputs, in order.

        Example::

            def forward_inputs(self, inputs):
                return (pad_bags(inputs["token_ids"], inputs["offsets"]),)
        """
        return tuple(inputs.values())

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The axes of each exported input that vary at inference. Axes sharing a name must have equal sizes.

        Returns:
            Input name -> {axis: symbolic name}: the batch axis of every input by default.

        Example::

            def dynamic_axes(self):
                return {"token_ids": {0: "batch", 1: "sequence"}}
        """
        return {name: {0: "batch"} for name in self.input_names}

    def example_input(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """What export traces: real rows, never 1 (which would freeze the batch axis).

        Args:
            batch: the first validation batch.

        Returns:
            forward's inputs for the batch's first 2 rows, by default.

        Example::

            def example_input(self, batch):
                (ids,), _ = self.split_batch(batch)
                return (ids[:2, : self.max_length],)
        """
        inputs, _ = self.split_batch(batch)
        return tuple(tensor[:2] for tensor in inputs)

    def for_export(self) -> torch.nn.Module:
        """The module the exporters trace, called with `export_inputs`, from an eval-mode copy of the task.
        Override to swap a module built for training for an equivalent one that exports to a faster graph
        (NeMo swaps export-hostile modules the same way); every format is still verified against this eager
        task, so a swap that changes the answers fails the export.

        Returns:
            The task itself, by default.

        Example::

            def for_export(self):
                return self.net.for_inference()  # idf folded into the embedding table
        """
        return self

    def onnx_fusions(self) -> dict[str, Any] | None:
        """Which fusions onnxruntime's transformer optimiser applies to the exported ONNX graph (attention,
        skip layer-norm, bias-GELU: fewer, faster kernels, and the int8 copy quantizes the fused graph). The
        fused graph is verified against this eager task like any other.

        Returns:
            Keyword arguments of `onnxruntime.transformers.optimizer.optimize_model` (`model_type`, `num_heads`,
            `hidden_size`), or None (the default) to leave the graph as exported.

        Example::

            def onnx_fusions(self):
                config = self.net.encoder.config
                return {"model_type": "bert", "num_heads": config.num_attention_heads,
                        "hidden_size": config.hidden_size}
        """
        return None

    def input_spec(self, example: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """The exported inputs as the bundle's manifest lists them, which `converge predict` checks requests
        against.

        Args:
            example: the traced inputs (`export_inputs` of `example_input`).

        Returns:
            One {"name", "dtype", "shape"} per input; a dynamic axis (`dynamic_axes`) by its symbolic name.

        Example::

            task.input_spec({"images": torch.zeros(2, 1, 8, 8)})
            # [{"name": "images", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
        """
        axes = self.dynamic_axes()
        return [{"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                 "shape": [axes.get(name, {}).get(axis, size) for axis, size in enumerate(tensor.shape)]}
                for name, tensor in example.items()]

    def serving_state(self) -> dict[str, Any]:
        """What the runtime's preprocessor and postprocessor are built from, written into the bundle's manifest
        as its "preprocessing" entry. Override to add what serving needs beyond the data (the layout the
        exported model reads), rather than writing it into `spec`, which the task is rebuilt from.

        Returns:
            Plain JSON: the data spec by default.

        Example::

            def serving_state(self):
                return {**super().serving_state(), "model_inputs": list(self.input_names)}
        """
        return dict(self.spec)

    # -- dashboards (converge.diagnostics.dashboards) -------------------------------------------
    def log_pictures(self, writer: Any, step: int) -> None:
        """Pictures of the model on validation data for TensorBoard, drawn every few epochs and when fitting
        ends. Runs in eval mode without gradients, on every rank (only rank 0's writer writes). None by default.

        Args:
            writer: a TensorBoard `SummaryWriter` (a no-op stand-in on ranks other than 0).
            step: the global step to draw at.

        Example::

            def log_pictures(self, writer, step):
                log_confusion_matrix(writer, self, self.spec["class_names"], step)
        """

    def log_final_pictures(self, writer: Any, step: int) -> None:
        """Views too costly to repeat, drawn once when fitting ends (the recommenders' embedding projector).
        None by default.

        Args:
            writer: as for `log_pictures`.
            step: the global step to draw at.

        Example::

            def log_final_pictures(self, writer, step):
                writer.add_embedding(self.net.items.weight, metadata=self.spec["items"], global_step=step)
        """

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
        trainer = self.trainer
        # The steps Lightning's loggers write (its logger connector's should_update_logs), from public attributes:
        # one optimiser steps once per logged batch, so global_step counts what Lightning counts there.
        every = trainer.log_every_n_steps
        if trainer.fast_dev_run or (every and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)

    def _reset_train_loss(self) -> None:
        self._train_loss_sum: torch.Tensor | float = 0.0
        self._train_loss_count = 0

    def on_train_epoch_start(self) -> None:
        self._reset_train_loss()

    def on_train_epoch_end(self) -> None:
        if self._train_loss_count:  # nothing when a subclass's own training_step logs its loss
            self.log("train/loss_epoch", self._train_loss_sum / self._train_loss_count, on_epoch=True, prog_bar=True)
        self._save_frozen_features()  # after the epoch's validation: its rows too

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics, on_epoch=True)
        self._save_frozen_features()

    def _save_frozen_features(self) -> None:
        for features in frozen_features_in(self):
            features.save()

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
