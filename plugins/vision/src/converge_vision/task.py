"""Image classification: images in [0, 1] in, class logits out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from converge import TaskModule, frozen_features_in, log_confusion_matrix
from converge_vision.pictures import log_predicted_samples


class ImageClassifier(TaskModule):
    """A network from the `net` config over normalised images.

    Normalisation is part of the model (buffers from the training split's
    statistics), so an exported model takes plain [0, 1] pixels and cannot be
    served with the wrong statistics.

    A frozen backbone's outputs are cached (`converge.FrozenFeatures`) for every batch when the
    training images are not augmented; with `data.train_transforms`, a training image is new each
    epoch, so only validation and test batches are cached.
    """

    monitor = "val/acc"
    mode = "max"
    baseline = "class_prior"
    input_names = ("images",)
    output_names = ("logits",)

    def __init__(
        self,
        net: Mapping[str, Any],
        spec: Mapping[str, Any],
        optim: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(spec=spec, optim=optim, scheduler=scheduler, data=data)
        self.net = instantiate(dict(net), in_channels=spec["channels"], num_classes=spec["num_classes"])
        augmented = bool((data or {}).get("train_transforms"))
        for features in frozen_features_in(self.net):
            features.cache_training = not augmented
        self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)

    def build_metrics(self) -> MetricCollection:
        classes = self.spec["num_classes"]
        return MetricCollection({
            "acc": MulticlassAccuracy(num_classes=classes, average="micro"),
            "f1": MulticlassF1Score(num_classes=classes, average="macro"),
        })

    def backbone(self) -> torch.nn.Module | None:
        """The network's own pretrained part (features or torchvision body), when it names one."""
        return self.net.backbone() if hasattr(self.net, "backbone") else None

    def backbone_blocks(self) -> list[torch.nn.Module]:
        return self.net.blocks() if hasattr(self.net, "blocks") else super().backbone_blocks()

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, target, label_smoothing=self.label_smoothing)

    def log_pictures(self, writer: Any, step: int) -> None:
        log_confusion_matrix(writer, self, self.spec["class_names"], step)
        log_predicted_samples(writer, self, self.spec["class_names"], step)
