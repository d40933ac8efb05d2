"""converge: a pluggable training framework for PyTorch.

The public API: everything a plugin imports comes from here (`from converge import TaskModule, DataError`),
never from a converge submodule, whose layout may change. Resolved lazily, name by name, so `import converge`
and the runtime's names (`Preprocessor`, `Request`, the errors, `Plugin`, `Task`, `WheelDataset`) import no
torch: `converge --help`, `converge plugins` and `converge predict` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LOCATIONS = {
    # declaring a plugin (no torch)
    "Plugin": "converge.plugin",
    "Task": "converge.plugin",
    "WheelDataset": "converge.fetch",
    "locate": "converge.sources",
    # errors a plugin raises for a user's mistake (no torch)
    "ConvergeError": "converge.errors",
    "ConfigError": "converge.errors",
    "DataError": "converge.errors",
    "PluginError": "converge.errors",
    "CheckpointError": "converge.errors",
    "ExportError": "converge.errors",
    "HardwareError": "converge.errors",
    "UnknownNameError": "converge.errors",
    # serving a bundle (numpy only)
    "Preprocessor": "converge.runtime.processing",
    "Postprocessor": "converge.runtime.processing",
    "ClassificationPostprocessor": "converge.runtime.processing",
    "Request": "converge.runtime.processing",
    "positive_int": "converge.runtime.processing",
    "json_field": "converge.runtime.processing",
    "LogRecord": "converge.runtime.processing",
    # training (torch)
    "TaskModule": "converge.task",
    "DataModule": "converge.data.module",
    "SeededDataset": "converge.data.sampling",
    "ShardSampler": "converge.data.sampling",
    "world_and_rank": "converge.data.sampling",
    "stratified_split": "converge.data.splits",
    "stratified_fold": "converge.data.splits",
    "validation_split": "converge.data.splits",
    "check_folds": "converge.data.splits",
    "read_weights": "converge.training.pretrained",
    "load_state": "converge.training.pretrained",
    "FeatureCache": "converge.training.feature_cache",
    "FrozenFeatures": "converge.training.feature_cache",
    "frozen_features_in": "converge.training.feature_cache",
    "row_key": "converge.training.feature_cache",
    # dashboards
    "log_confusion_matrix": "converge.diagnostics.confusion",
    "validation_predictions": "converge.diagnostics.dashboards",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'converge' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
