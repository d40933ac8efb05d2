"""The plugin author's surface: one public API, `converge`, imported lazily, and plugins that use nothing else."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import converge

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_declaring_and_serving_names_import_no_torch() -> None:
    """A plugin's registration and its runtime side load in `converge plugins` and `converge predict`."""
    loaded = _run("""
import json, sys
import converge
from converge import DataError, Plugin, Postprocessor, Preprocessor, Request, Task, WheelDataset
import converge_recsys.plugin, converge_text.plugin, converge_vision.plugin
print(json.dumps(sorted(name for name in ("torch", "lightning", "hydra") if name in sys.modules)))
""")
    assert loaded == []


def test_every_public_name_resolves_and_is_listed() -> None:
    assert converge.__all__ == sorted(converge.__all__)
    assert set(converge.__all__) <= set(dir(converge))
    for name in converge.__all__:
        assert getattr(converge, name).__name__ == name
    assert {"TaskModule", "DataModule", "SeededDataset", "ConvergeError", "ConfigError", "DataError", "PluginError",
            "CheckpointError", "Preprocessor", "Postprocessor", "Request", "WheelDataset", "log_confusion_matrix",
            "validation_predictions", "Plugin", "Task"} <= set(converge.__all__)


def _converge_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) of every import of converge in a file: a module, or `converge:name` for `from converge import`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "converge"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "converge":
            found += [(node.lineno, f"{node.module}:{alias.name}") for alias in node.names]
    return found


def test_plugins_import_only_the_public_api() -> None:
    """Their source imports `converge` (public names only), their tests `converge` and `converge.testing`: what a
    third-party plugin can rely on."""
    wrong = []
    for path in sorted(PLUGINS.glob("*/src/**/*.py")) + sorted(PLUGINS.glob("*/tests/**/*.py")):
        allowed = ("converge", "converge.testing") if "tests" in path.relative_to(PLUGINS).parts else ("converge",)
        for line, imported in _converge_imports(path):
            module, _, name = imported.partition(":")
            if module not in allowed or (module == "converge" and name not in converge.__all__):
                wrong.append(f"{path.relative_to(PLUGINS)}:{line}: {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("import converge.data.sampling\nfrom converge.errors import DataError\n"
                                   "from converge import registry, TaskModule\nimport converge_vision\n"
                                   "def f():\n    from converge.cli import main\n")
    assert _converge_imports(tmp_path / "x.py") == [
        (1, "converge.data.sampling"), (2, "converge.errors:DataError"), (3, "converge:registry"),
        (3, "converge:TaskModule"), (6, "converge.cli:main")]


def test_testing_helpers_import_without_pytest() -> None:
    """`converge.testing` for a plugin's scripts and notebooks: pytest only for the conformance suite."""
    result = _run("""
import json, sys
sys.modules["pytest"] = None  # as if it were not installed
import converge.testing
from converge.testing import compose, predict, run_cli, train_run
cfg = compose(["data=vision/digits", "model=vision/cnn"])
try:
    converge.testing.PluginConformance
    needs_pytest = False
except ImportError:
    needs_pytest = True
listed = "train_run" in dir(converge.testing)
print(json.dumps({"target": cfg.model._target_, "needs_pytest": needs_pytest, "dir": listed}))
""")
    assert result == {"target": "converge_vision.task.ImageClassifier", "needs_pytest": True, "dir": True}
