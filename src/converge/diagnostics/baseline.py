"""The score of the trivial predictor a task declares (`TaskModule.baseline`), on the validation targets.

"Underfitting" means a run that stopped improving no better than a model that ignores its
inputs. That model is fitted on the training targets and scored with the task's own loss and
metrics, so its numbers compare directly with val/loss and val/<metric>.
"""

from __future__ import annotations

import torch

from converge.task import TaskModule

BASELINES = ("class_prior", "mean")


def trivial_outputs(kind: str, train_targets: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """What the trivial model outputs for `count` samples.

    class_prior: logits of the training class frequencies (so the predicted class is the majority class
    and the loss is that of the best constant guess); mean: the training targets' mean.
    """
    if kind == "class_prior":
        frequencies = torch.bincount(train_targets.long().flatten(), minlength=num_classes).double()
        logits = (frequencies / frequencies.sum()).clamp_min(1e-12).log().float()
        return logits.expand(count, -1)
    if kind == "mean":
        mean = train_targets.double().mean(dim=0).float()
        return mean.expand(count, *mean.shape)
    raise ValueError(f"unknown baseline '{kind}': one of {BASELINES}")


def baseline_scores(task: TaskModule, train_targets: torch.Tensor, val_targets: torch.Tensor) -> dict[str, float]:
    """val/loss and val/<metric> of the task's declared trivial predictor (empty when it declares none)."""
    if task.baseline is None or len(train_targets) == 0 or len(val_targets) == 0:
        return {}
    metrics = task.build_metrics().to("cpu")
    num_classes = 0
    if task.baseline == "class_prior":  # torchmetrics' multiclass metrics know the class count, else the largest label
        declared = [n for n in (getattr(m, "num_classes", None) for m in metrics.values()) if n]
        num_classes = max([*declared, int(torch.cat([train_targets.cpu(), val_targets.cpu()]).max()) + 1])
    outputs = trivial_outputs(task.baseline, train_targets.cpu(), len(val_targets), num_classes)
    target = val_targets.cpu()
    metrics.update(outputs, target)
    scores = {f"val/{name}": float(value) for name, value in metrics.compute().items()}
    scores["val/loss"] = float(task.compute_loss(outputs, target))
    return scores
