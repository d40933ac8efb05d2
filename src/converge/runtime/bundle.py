"""Opening an export bundle: the manifest checked, every model file's sha256 verified before use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converge.checksums import sha256_of
from converge.errors import ConvergeError, DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXAMPLES = "example_inputs.npz"  # validation rows in forward's layout, one request each (converge bench)
FORMAT_FILES = {"onnx": "model.onnx", "int8": "model.int8.onnx", "torchscript": "model.ts",
                "torch_export": "model.pt2"}
ONNX_FORMATS = ("onnx", "int8")


class BundleError(ConvergeError):
    """A bundle that is missing, tampered with, or of a format this converge cannot read."""


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise BundleError(f"{root}: not an export bundle (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BundleError(f"{path}: not valid JSON ({error})") from error
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"{path}: bundle format version {version!r} is not supported "
                              f"(this converge reads version {FORMAT_VERSION}); export it again")
        return cls(root, manifest)

    @property
    def formats(self) -> list[str]:
        return list(self.manifest["formats"])

    def verified_file(self, format_name: str) -> Path:
        """The model file of `format_name`, after checking its sha256 against the manifest."""
        if format_name not in self.manifest["formats"]:
            raise BundleError(f"{self.root}: no '{format_name}' model in this bundle "
                              f"(it has: {', '.join(self.formats)})")
        return self.verified_file_named(self.manifest["formats"][format_name])

    def verified_file_named(self, name: str) -> Path:
        """A file of the bundle, after checking its sha256 against the manifest."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.root}: '{name}' is not listed in the manifest")
        path = self.root / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if sha256_of(path) != self.manifest["files"][name]["sha256"]:
            raise BundleError(f"{path}: sha256 does not match the manifest; the file was changed "
                              f"or corrupted, refusing to load it")
        return path

    def session(self, format_name: str = "onnx", threads: int | None = None) -> Any:
        """An onnxruntime session for an ONNX format of the bundle on `threads` intra-op threads (None: all cores)."""
        if format_name not in ONNX_FORMATS:
            raise BundleError(f"format '{format_name}' is not an ONNX model: use one of {', '.join(ONNX_FORMATS)}")
        return onnx_session(self.verified_file(format_name), threads)

    def check_inputs(self, arrays: dict[str, Any], source: str) -> None:
        """Inputs must match the manifest's names, dtypes and fixed dimensions."""
        for spec in self.manifest["inputs"]:
            array = arrays.get(spec["name"])
            if array is None:
                raise DataError(f"{source}: no model input '{spec['name']}'")
            # dtype == "float32", not str(dtype): 2.5 us saved on every served request
            if array.dtype != spec["dtype"] or array.ndim != len(spec["shape"]):
                raise DataError(f"{source}: input '{spec['name']}' is {array.dtype} with shape {list(array.shape)}, "
                                f"the model takes {spec['dtype']} {spec['shape']}")
            for axis, (size, expected) in enumerate(zip(array.shape, spec["shape"], strict=True)):
                if isinstance(expected, int) and size != expected:
                    raise DataError(f"{source}: input '{spec['name']}' has size {size} on axis {axis}, "
                                    f"the model takes {expected} (shape {spec['shape']})")


def onnx_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
