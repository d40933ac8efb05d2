"""What a plugin declares: a name, a Hydra config package, its tasks and data sets.

A plugin module must stay cheap to import (no torch): the registry loads every
plugin to answer `converge plugins` and to build Hydra's search path. Tasks and
processors are therefore named by import path and resolved only when used.
"""

from __future__ import annotations

import importlib
import importlib.resources
from dataclasses import dataclass, field
from typing import Any

from converge.errors import PluginError
from converge.fetch import WheelDataset


def resolve(path: str) -> Any:
    """Import `package.module:attribute` (or `package.module.attribute`)."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise PluginError(f"cannot import '{path}': {error}") from error


@dataclass(frozen=True)
class Task:
    """A task a plugin provides: its TaskModule class and the runtime's processors."""

    name: str
    module: str
    preprocessor: str | None = None
    postprocessor: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Plugin:
    """A domain plugin. Registering one takes this object plus YAML files.

    Configs live in `config_package` under `<group>/<name>/`, so a plugin named
    `vision` provides `data=vision/digits`, `model=vision/cnn`, ...
    """

    name: str
    config_package: str
    tasks: tuple[Task, ...] = ()
    datasets: tuple[WheelDataset, ...] = ()
    description: str = ""
    version: str = field(default="", compare=False)

    @property
    def searchpath(self) -> str:
        return f"pkg://{self.config_package}"

    def config_options(self) -> dict[str, list[str]]:
        """Config group -> options this plugin provides (`vision/digits`, ...), from its YAML files."""
        try:
            return config_options(self.config_package)
        except ModuleNotFoundError as error:
            raise PluginError(f"plugin '{self.name}': config package {self.config_package} not found") from error

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        from converge.errors import UnknownNameError

        raise UnknownNameError(f"task of plugin '{self.name}'", name, [t.name for t in self.tasks])


def config_options(package: str) -> dict[str, list[str]]:
    """Config group -> option names found as YAML files in a config package (read, not imported)."""
    root = importlib.resources.files(package)
    options: dict[str, list[str]] = {}
    for group_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if group_dir.is_dir() and not group_dir.name.startswith(("_", ".")):
            found = sorted(_yaml_names(group_dir, prefix=""))
            if found:
                options[group_dir.name] = found
    return options


def _yaml_names(directory: Any, prefix: str) -> list[str]:
    names = []
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            names += _yaml_names(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".yaml"):
            names.append(prefix + entry.name[: -len(".yaml")])
    return names
