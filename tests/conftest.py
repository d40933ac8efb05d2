"""Shared fixtures: the plugin of the README's "Write a plugin" section, built and installed for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The core tests share small stand-ins (`lightning_doubles`): importable by name from this folder.
sys.path.insert(0, str(Path(__file__).parent))
# Data sets fetched by tests land in the user's cache (shared across runs), never in the repo.
os.environ.setdefault("CONVERGE_DATA_DIR", os.path.expanduser("~/.cache/converge/data"))

README = Path(__file__).resolve().parents[1] / "README.md"
_FILE_BLOCK = re.compile(r"^`([\w./-]+)`:\n```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_plugin_files() -> dict[str, str]:
    """path -> content of every file the README's "Write a plugin" section shows."""
    section = README.read_text().split("## Write a plugin", 1)[1].split("\n## ", 1)[0]
    return {path: body for path, body in _FILE_BLOCK.findall(section)}


@pytest.fixture(scope="session")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The README's plugin written to disk and pip-installed into its own folder, plus a CSV to train on."""
    root = tmp_path_factory.mktemp("tabular")
    for relative, content in readme_plugin_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(root / "converge-tabular")],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)  # synthetic data: test-only
    x = rng.normal(size=(400, 3))
    price = x @ np.array([2.0, -1.0, 0.5]) + 0.1 * rng.normal(size=400)
    csv = root / "houses.csv"
    np.savetxt(csv, np.column_stack([x, price]), delimiter=",", header="rooms,age,area,price", comments="")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return {"root": root, "site": site, "source": root / "converge-tabular", "csv": csv, "env": env,
            "overrides": ["data=tabular/csv", "model=tabular/mlp", f"data.path={csv}", "data.target=price"]}
