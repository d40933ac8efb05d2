"""Plugin discovery: entry points, modules named in config, and the errors that name both sources."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from converge import registry
from converge.errors import PluginError, UnknownNameError


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write an importable plugin module `name` whose configs are `files` (relative path -> YAML)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, plugin_name: str, files: dict[str, str]) -> str:
        package = tmp_path / name
        (package / "conf").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "conf" / "__init__.py").write_text("")
        (package / "plugin.py").write_text(textwrap.dedent(f"""
            from converge import Plugin
            plugin = Plugin(name={plugin_name!r}, config_package="{name}.conf")
        """))
        for relative, content in files.items():
            (package / "conf" / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / "conf" / relative).write_text(content)
        return f"{name}.plugin"

    yield write
    for module in [m for m in sys.modules if m.startswith("plug_")]:
        del sys.modules[module]


def test_installed_vision_plugin_is_discovered() -> None:
    vision = registry.get("vision")
    assert vision.searchpath == "pkg://converge_vision.conf"
    assert "vision/digits" in vision.config_options()["data"]
    assert "entry point 'vision" in registry.sources()["vision"]


def test_unknown_plugin_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: vision"):
        registry.get("visoin")


def test_extra_module_is_registered(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    module = plugin_module("plug_ok", "okplug", {"data/okplug/small.yaml": "x: 1\n"})
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, module)
    assert registry.plugins()["okplug"].config_options() == {"data": ["okplug/small"]}
    assert registry.config_options()["data"]["okplug/small"] == "okplug"


def test_duplicate_names_name_both_sources(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    module = plugin_module("plug_dup", "vision", {})
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, module)
    with pytest.raises(PluginError, match=r"two plugins are named 'vision': entry point .* and plugins.extra"):
        registry.plugins()


def test_configs_outside_the_namespace_are_refused(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    module = plugin_module("plug_stray", "stray", {"model/cnn.yaml": "x: 1\n"})
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, module)
    with pytest.raises(PluginError, match=r"provides config 'model/cnn' outside its namespace.*model/stray/"):
        registry.plugins()


def test_a_module_that_is_not_a_plugin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, "json")
    with pytest.raises(PluginError, match="must define exactly one Plugin"):
        registry.plugins()
