"""converge: a pluggable training framework for PyTorch.

The public API for plugin authors. Imported lazily, so `import converge` (and
`converge --help`) does not pay for torch and Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ConfigError", "DataError", "DataModule", "Plugin", "Task", "TaskModule", "UnknownNameError", "WheelDataset",
           "locate", "stratified_split"]

_LOCATIONS = {
    "ConfigError": "converge.errors",
    "DataError": "converge.errors",
    "DataModule": "converge.data.module",
    "Plugin": "converge.plugin",
    "Task": "converge.plugin",
    "TaskModule": "converge.task",
    "UnknownNameError": "converge.errors",
    "WheelDataset": "converge.fetch",
    "locate": "converge.training.pretrained",
    "stratified_split": "converge.data.splits",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'converge' has no attribute '{name}'")
