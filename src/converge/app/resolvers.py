"""converge's OmegaConf resolvers, registered before Hydra composes a config (the CLI; converge.testing.compose).

- `${converge_run_dir:...}` (conf/hydra/default.yaml): the run directory, see converge.app.run_dir.
- `${converge_task:${model._target_},${data},monitor}` (conf/train.yaml): a class attribute of the configured task, so
  the monitor a run follows is the task's own unless set, and is in the composed config (`--cfg job`) itself.
"""

from __future__ import annotations

import typing
from typing import Any

from omegaconf import OmegaConf

from converge.app.run_dir import register_run_directory
from converge.plugin import resolve


def task_attribute(target: str, data: Any, attribute: str) -> Any:
    """`attribute` of the TaskModule class the model's `_target_` builds with this `data` config.

    The target is the class itself, or a factory function that picks the class from the data (recsys: rating or
    ranking by `data.task`) and says which through its `task_class(data)` attribute."""
    built = resolve(target)
    if not isinstance(built, type):
        built = built.task_class(data) if hasattr(built, "task_class") else typing.get_type_hints(built)["return"]
    return getattr(built, attribute)


def register_resolvers() -> None:
    register_run_directory()
    if not OmegaConf.has_resolver("converge_task"):
        OmegaConf.register_new_resolver("converge_task", task_attribute)
