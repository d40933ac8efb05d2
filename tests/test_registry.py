"""Plugin discovery: entry points, modules named in config, and the errors that name both sources."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from converge import PluginError, Task, UnknownNameError, registry
from converge.testing import load_task, train_run


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write an importable plugin module `name` whose configs are `files` (relative path -> YAML)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, plugin_name: str, files: dict[str, str], tasks: str = "()") -> str:
        package = tmp_path / name
        (package / "conf").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "conf" / "__init__.py").write_text("")
        (package / "plugin.py").write_text(textwrap.dedent(f"""
            from converge import Plugin, Task
            plugin = Plugin(name={plugin_name!r}, config_package="{name}.conf", tasks={tasks})
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
    assert "vision/digits" in vision.options_by_group()["data"]
    assert "entry point 'vision" in registry.sources()["vision"]


def test_unknown_plugin_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: vision"):
        registry.get("visoin")


def test_extra_module_is_registered(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    module = plugin_module("plug_ok", "okplug", {"data/okplug/small.yaml": "x: 1\n"})
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, module)
    assert registry.plugins()["okplug"].options_by_group() == {"data": ["okplug/small"]}
    assert registry.providers_by_option()["data"]["okplug/small"] == "okplug"


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


def test_a_task_keeps_one_form_of_its_class_path() -> None:
    dotted = Task(name="t", task_class="converge_vision.task.ImageClassifier", preprocessor="converge.Preprocessor")
    assert dotted.task_class == "converge_vision.task:ImageClassifier"
    assert dotted.preprocessor == "converge:Preprocessor"
    assert Task(name="t", task_class="converge_vision.task:ImageClassifier").task_class == dotted.task_class


@pytest.mark.parametrize("path", ["ImageClassifier", "converge_vision.task:", "converge vision.task:X",
                                  "converge_vision..task:X", ":X"])
def test_a_malformed_class_path_names_the_field(path: str) -> None:
    with pytest.raises(PluginError, match=rf"Task 't': task_class '{re.escape(path)}' is not a class path"):
        Task(name="t", task_class=path)


def test_a_class_path_to_no_module_is_refused_when_the_plugin_registers() -> None:
    with pytest.raises(PluginError, match=r"Task 't': postprocessor 'converge_vision.serving:X': no module "
                                          r"'converge_vision.serving'"):
        Task(name="t", task_class="converge_vision.task:ImageClassifier", postprocessor="converge_vision.serving:X")


def test_a_task_registered_by_a_dotted_path_trains_and_is_found_again(plugin_module, monkeypatch, tmp_path) -> None:
    """Checkpoints name their task `module:Class`: a plugin that wrote `module.Class` must still be found by
    eval and export (it used to train, then fail there)."""
    module = plugin_module("plug_dotted", "dotted", {}, tasks='(Task(name="digits", '
                                                               'task_class="plug_dotted.task.Digits"),)')
    (tmp_path / "plug_dotted" / "task.py").write_text(
        "from converge_vision.task import ImageClassifier\n\n\nclass Digits(ImageClassifier):\n    pass\n")
    monkeypatch.setenv(registry.EXTRA_PLUGINS_ENV, module)
    train_run(["data=vision/digits", "model=vision/cnn", "model._target_=plug_dotted.task.Digits", "debug=smoke",
               "~callbacks.progress_bar", "~callbacks.model_summary"], tmp_path / "run")
    task = load_task(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert type(task).__name__ == "Digits"
    assert registry.find_task(task.import_path())[0].name == "dotted"
