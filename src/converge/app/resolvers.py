"""converge's OmegaConf resolvers, registered before Hydra composes a config (the CLI; converge.testing.compose).

- `${converge_run_dir:...}` (conf/hydra/default.yaml): the run directory, see converge.app.run_dir.
- `${converge_task:${model._target_},${data},monitor}` (conf/train.yaml): a class attribute of the configured task, so
  the monitor a run follows is the task's own unless set, and is in the composed config (`--cfg job`) itself.
- `${converge_mode:${model._target_},${data},${monitor.metric}}` (conf/train.yaml): min or max for the monitored
  metric, so `monitor.metric=val/loss` alone does not keep the task's `max` (and with it the worst checkpoint).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from omegaconf import OmegaConf

from converge.app.run_dir import register_run_directory
from converge.errors import ConfigError
from converge.plugin import resolve

# The words that tell a metric's direction, found in the last part of its name, as they are or without a trailing
# k (train/loss_epoch -> loss, val/ndcg10 -> ndcg, val/f1). The metrics a task builds are checked again once it is
# built, against torchmetrics' own `higher_is_better`.
LOWER_IS_BETTER = {"loss", "mse", "rmse", "mae", "mape", "error", "nll", "perplexity", "ppl", "ece", "brier"}
HIGHER_IS_BETTER = {"acc", "accuracy", "f1", "auc", "auroc", "ap", "precision", "recall", "ndcg", "hr", "hit", "mrr",
                    "map", "r2", "iou", "dice", "kappa", "mcc", "bleu", "rouge"}


def task_attribute(target: str, data: Any, attribute: str) -> Any:
    """`attribute` of the TaskModule class the model's `_target_` builds with this `data` config.

    The target is the class itself, or a factory function that picks the class from the data (recsys: rating or
    ranking by `data.task`) and says which through its `task_class(data)` attribute."""
    built = resolve(target)
    if not isinstance(built, type):
        built = built.task_class(data) if hasattr(built, "task_class") else typing.get_type_hints(built)["return"]
    return getattr(built, attribute)


def monitor_mode(target: str, data: Any, metric: str) -> str:
    """`min` or `max` for the monitored `metric`: the task's own mode for its own metric, else by the metric's name.

    Raises:
        ConfigError: a metric whose name says nothing of its direction (`monitor.mode` must then be set).
    """
    if metric == task_attribute(target, data, "monitor") or not isinstance(metric, str):  # (validation names a non-str)
        return task_attribute(target, data, "mode")
    for word in re.split(r"[_@]", metric.rpartition("/")[2].lower()):  # train/loss_epoch, val/hr@10
        for name in (word, word.rstrip("0123456789")):  # f1 as it is, ndcg10 without its k
            if name in LOWER_IS_BETTER or name in HIGHER_IS_BETTER:
                return "min" if name in LOWER_IS_BETTER else "max"
    raise ConfigError(f"monitor.metric={metric}: converge cannot tell from its name whether higher is better; "
                      "set monitor.mode=min or monitor.mode=max")


def register_resolvers() -> None:
    register_run_directory()
    if not OmegaConf.has_resolver("converge_task"):
        OmegaConf.register_new_resolver("converge_task", task_attribute)
    if not OmegaConf.has_resolver("converge_mode"):
        OmegaConf.register_new_resolver("converge_mode", monitor_mode)
