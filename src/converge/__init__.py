"""converge: a pluggable training framework for PyTorch.

The public API for plugin authors. Imported lazily, so `import converge` (and
`converge --help`) does not pay for torch and Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["DataModule", "Plugin", "Task", "TaskModule", "WheelDataset", "stratified_split"]

_LOCATIONS = {
    "DataModule": "converge.data.module",
    "Plugin": "converge.plugin",
    "Task": "converge.plugin",
    "TaskModule": "converge.task",
    "WheelDataset": "converge.fetch",
    "stratified_split": "converge.data.splits",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'converge' has no attribute '{name}'")
