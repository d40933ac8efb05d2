"""Plugin discovery: installed entry points plus modules named in config.

Plugins come from the entry-point group `converge.plugins` (each entry point
resolves to a `Plugin`) and from `plugins.extra=[my_pkg.plugin]`, which the CLI
passes on through $CONVERGE_PLUGINS so that Hydra's search path, and every DDP
rank, sees the same set. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from importlib.metadata import entry_points

from converge.errors import PluginError, UnknownNameError
from converge.plugin import Plugin, Task, options_in_package

ENTRY_POINT_GROUP = "converge.plugins"
EXTRA_PLUGINS_ENV = "CONVERGE_PLUGINS"


def plugins() -> dict[str, Plugin]:
    """Every registered plugin by name (cached per $CONVERGE_PLUGINS and sys.path, what decides the set)."""
    return _registered()[0]


def get(name: str) -> Plugin:
    registered = plugins()
    if name not in registered:
        raise UnknownNameError("plugin", name, registered)
    return registered[name]


def sources() -> dict[str, str]:
    """Plugin name -> where it was registered (an entry point or a module)."""
    return dict(_registered()[1])


def find_task(task_class: str) -> tuple[Plugin, Task]:
    """The registered plugin and task whose TaskModule class is `task_class` (`package.module:Class`, the form
    `Task` keeps and `TaskModule.import_path` writes into checkpoints and bundles)."""
    for plugin in plugins().values():
        for task in plugin.tasks:
            if task.task_class == task_class:
                return plugin, task
    known = [task.task_class for plugin in plugins().values() for task in plugin.tasks]
    raise UnknownNameError("task class", task_class, known,
                           hint="Install or register (plugins.extra=[...]) the plugin that provides it.")


def _registered() -> tuple[dict[str, Plugin], dict[str, str]]:
    return _discover(os.environ.get(EXTRA_PLUGINS_ENV, ""), tuple(sys.path))


@cache
def _discover(extra: str, search_path: tuple[str, ...]) -> tuple[dict[str, Plugin], dict[str, str]]:
    # search_path is only part of the cache key: entry points are found on sys.path.
    found: dict[str, Plugin] = {}
    origin: dict[str, str] = {}

    def add(plugin: object, source: str) -> None:
        if not isinstance(plugin, Plugin):
            raise PluginError(f"{source} is not a converge.Plugin (got {type(plugin).__name__})")
        if plugin.name in found:
            raise PluginError(f"two plugins are named '{plugin.name}': {origin[plugin.name]} and {source}")
        found[plugin.name] = plugin
        origin[plugin.name] = source

    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist.name if point.dist else "?"
        try:
            loaded = point.load()
        except Exception as error:  # a broken third-party plugin must not hide the others' names
            raise PluginError(
                f"entry point '{point.name} = {point.value}' (from {dist}) failed to load: {error}"
            ) from error
        add(loaded, f"entry point '{point.name} = {point.value}' (from {dist})")
    for module_path in filter(None, (part.strip() for part in extra.split(","))):
        add(_load_module_plugin(module_path), f"plugins.extra module '{module_path}'")
    _check_config_namespaces(found, origin)
    return found, origin


def _load_module_plugin(module_path: str) -> object:
    module_name, _, attribute = module_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PluginError(f"plugins.extra: cannot import '{module_name}': {error}") from error
    if attribute:
        return getattr(module, attribute, None)
    candidates = [value for value in vars(module).values() if isinstance(value, Plugin)]
    if len(candidates) != 1:
        raise PluginError(f"plugins.extra: module '{module_name}' must define exactly one Plugin "
                          f"(found {len(candidates)}); name it as '{module_name}:attribute'")
    return candidates[0]


def _check_config_namespaces(found: dict[str, Plugin], origin: dict[str, str]) -> None:
    """A plugin's configs must sit under `<group>/<plugin name>/`: the folder is the namespace."""
    for name, plugin in found.items():
        for group, options in plugin.options_by_group().items():
            stray = [option for option in options if not option.startswith(f"{name}/")]
            if stray:
                raise PluginError(
                    f"plugin '{name}' ({origin[name]}) provides config '{group}/{stray[0]}' outside its "
                    f"namespace: move it to {group}/{name}/ so it cannot collide with the core or other plugins"
                )


def providers_by_option() -> dict[str, dict[str, str]]:
    """Config group -> option -> who provides it ('core' or a plugin name), for every group."""
    merged: dict[str, dict[str, str]] = {}
    for provider, package in [("core", "converge.conf")] + [(p.name, p.config_package) for p in plugins().values()]:
        for group, names in options_in_package(package).items():
            for name in names:
                merged.setdefault(group, {})[name] = provider
    return merged
