"""Test helpers for converge and its plugins, and the plugin conformance suite.

    from converge.testing import PluginConformance

    class TestMyPlugin(PluginConformance):
        overrides = ["data=mine/small", "model=mine/net"]

pytest then trains, resumes, evaluates, exports and serves your task through the real
composition, Trainer, checkpoint, export and predict code, in seconds. A plugin's other tests
get what they need from here too (compose a config, train, rebuild a checkpoint, run a command),
never from converge's internals. Importing this package needs no pytest (`pip install converge[testing]`
brings it for the suite): the helpers that need pytest, torch or TensorBoard are imported when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from converge.testing.compose import cli, compose, free_port, predict, run_cli  # noqa: F401 - listed in __all__

_LOCATIONS = {
    "PluginConformance": "converge.testing.conformance",
    "train_run": "converge.testing.runs",
    "build_datamodule": "converge.testing.runs",
    "load_task": "converge.testing.runs",
    "read_events": "converge.testing.dashboards",
    "check_confusion_matrix": "converge.testing.dashboards",
    "KillAt": "converge.testing.faults",
    "served": "converge.testing.serving",
    "same_answers": "converge.testing.answers",
}

__all__ = sorted(["cli", "compose", "free_port", "predict", "run_cli", *_LOCATIONS])


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'converge.testing' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
