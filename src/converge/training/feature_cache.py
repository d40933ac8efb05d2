"""The outputs of a frozen module, computed once per input and kept: in memory for the run, on disk for the next.

A frozen pretrained encoder maps the same input to the same features every epoch, so training a head on
top of it needs the encoder once per distinct input, not once per epoch. The cache is named by a digest of
the module's weights and whatever else shapes its outputs (its config), and each row by its input's bytes:
new weights open another file; new data, or a new tokenizer (which gives other ids), are rows not seen
yet. Nothing stale can be read, so nothing is ever invalidated by hand.

It is stored under the data cache (`$CONVERGE_DATA_DIR/features/<digest>.npz`), not in the run directory:
its content depends on the weights and the inputs alone, never on the run, so every run that reads the same
data through the same frozen weights (a rerun, the jobs of a sweep, cross-validation folds, other seeds)
starts with it filled. The file is plain arrays (read without pickle), written atomically.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converge.fetch import data_dir


def weights_digest(module: nn.Module, *extra: str) -> str:
    """sha256 of a module's state (names, dtypes, shapes, values) and of `extra` strings (its config)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for text in extra:
        digest.update(text.encode())
    return digest.hexdigest()


def row_key(row: np.ndarray) -> bytes:
    """The key of one input row: a 16-byte digest of its dtype and bytes."""
    return hashlib.blake2b(row.dtype.str.encode() + row.tobytes(), digest_size=16).digest()


class FeatureCache:
    """Rows of features by the key of the input row they came from, backed by one `.npz` file.

    Args:
        path: the file; read when it exists.

    Example::

        cache = FeatureCache.for_module(encoder, json.dumps(config))
        features = cache.lookup([row_key(row) for row in ids], lambda rows: encode(ids[rows]))
        cache.save()
    """

    def __init__(self, path: Path) -> None:
        self.path, self.rows, self.added = path, {}, 0
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                self.rows = dict(zip(stored["keys"].tolist(), torch.from_numpy(stored["features"]), strict=True))

    @classmethod
    def for_module(cls, module: nn.Module, *extra: str) -> FeatureCache:
        """The cache of a frozen module's outputs, named by its weights and `extra` (see `weights_digest`)."""
        return cls(data_dir() / "features" / f"{weights_digest(module, *extra)}.npz")

    def lookup(self, keys: Sequence[bytes], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """The features of every row, computing only the rows not cached yet.

        Args:
            keys: one key per input row (`row_key`).
            compute: the features (one row each, float) of the input rows at the given positions.

        Returns:
            float32 (len(keys), ...) on the CPU.
        """
        missing = [position for position, key in enumerate(keys) if key not in self.rows]
        if missing:
            computed = compute(missing).detach().float().cpu()
            self.rows.update(zip((keys[position] for position in missing), computed, strict=True))
            self.added += len(missing)
        return torch.stack([self.rows[key] for key in keys])

    def save(self) -> None:
        """Write the rows if any were added since the last save (atomically: a reader sees all or nothing)."""
        if not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.rows), dtype="S16")
        features = torch.stack(list(self.rows.values())).numpy()
        temporary = self.path.with_name(f"{self.path.stem}.{os.getpid()}.partial")  # one per writer (DDP ranks)
        with open(temporary, "wb") as file:
            np.savez(file, keys=keys, features=features)
        os.replace(temporary, self.path)
        self.added = 0
