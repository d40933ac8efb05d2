"""The outputs of a frozen module, computed once per input and kept: in memory for the run, on disk for the next.

A frozen pretrained encoder maps the same input to the same features every epoch, so training a head on
top of it needs the encoder once per distinct input, not once per epoch. The cache is named by a digest of
the module's weights and whatever else shapes its outputs (its config), and each row by its input's bytes:
new weights open another file; new data, or a new tokenizer (which gives other ids), are rows not seen
yet. Nothing stale can be read, so nothing is ever invalidated by hand.

It is stored under the data cache (`$CONVERGE_DATA_DIR/features/<digest>.npz`, or `$CONVERGE_FEATURES_DIR`
when set: tests point it at a temporary folder), not in the run directory: its content depends on the weights
and the inputs alone, never on the run, so every run that reads the same data through the same frozen weights
(a rerun, the jobs of a sweep, cross-validation folds, other seeds) starts with it filled. The file is plain
arrays (read without pickle), written atomically; a save adds its rows to those already in the file, under a
lock, so processes that share it (DDP ranks, each with its own shard; the jobs of a sweep) lose none.

A network runs its pretrained part through `FrozenFeatures`, which decides when the cache applies (the rule is
in its docstring); the task writes the rows each training and test epoch added (`frozen_features_in`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converge.fetch import data_dir

log = logging.getLogger("converge")

FEATURES_DIR_ENV = "CONVERGE_FEATURES_DIR"


def weights_digest(module: nn.Module, *extra: str) -> str:
    """sha256 of a module's state (names, dtypes, shapes, values) and of `extra` strings (its config)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for text in extra:
        digest.update(text.encode())
    return digest.hexdigest()


def features_dir() -> Path:
    """The folder of the feature caches: $CONVERGE_FEATURES_DIR, else `features` in the data cache
    ($CONVERGE_DATA_DIR/features, by default ~/.cache/converge/data/features)."""
    configured = os.environ.get(FEATURES_DIR_ENV)
    return Path(configured) if configured else data_dir() / "features"


def cache_path(module: nn.Module, *extra: str) -> Path:
    """The file of a frozen module's cached outputs: `<features_dir()>/<weights_digest>.npz`."""
    return features_dir() / f"{weights_digest(module, *extra)}.npz"


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
        self.path, self.rows, self.added = path, _read(path), 0

    @classmethod
    def for_module(cls, module: nn.Module, *extra: str) -> FeatureCache:
        """The cache of a frozen module's outputs, named by its weights and `extra` (see `weights_digest`)."""
        return cls(cache_path(module, *extra))

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
        """Write the rows if any were added since the last save, with every row the file holds by then.

        Processes that share the file (DDP ranks, each with its own shard; the jobs of a sweep) each add their
        rows: the file is read, merged and replaced under an exclusive lock (`<file>.lock` next to it), so no
        row another process saved meanwhile is lost; the rows read are kept in memory too. The file is replaced
        atomically: a reader sees all of it or the previous one.
        """
        if not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f"{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
            self.rows = {**_read(self.path), **self.rows}
            keys = np.array(list(self.rows), dtype="S16")
            features = torch.stack(list(self.rows.values())).numpy()
            temporary = self.path.with_name(f"{self.path.stem}.{os.getpid()}.partial")
            with open(temporary, "wb") as file:
                np.savez(file, keys=keys, features=features)
            os.replace(temporary, self.path)
        self.added = 0


def _read(path: Path) -> dict[bytes, torch.Tensor]:
    """The rows a cache file holds, by key (none when there is no file yet)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as stored:
        return dict(zip(stored["keys"].tolist(), torch.from_numpy(stored["features"]), strict=True))


class FrozenFeatures(nn.Module):
    """Runs a network's pretrained part (its backbone); once that is frozen, through a `FeatureCache`.

    A network calls it where it would call its backbone. It holds no weights: the network's state dict, its
    checkpoints and its exported graph are those without it. While any backbone weight trains it is a plain call.
    Once every one is frozen, the backbone runs in eval mode without gradients (fixed features: no dropout,
    BatchNorm's running statistics), cached or not, so the cache changes no prediction; and its outputs come from
    the cache, each distinct input row computed once, when all of these hold:

    - `enabled`, the fine-tuning strategy's switch (`finetune=frozen|gradual`, `finetune.cache_features`);
    - not tracing or compiling (an exported graph runs the backbone);
    - no input has needed a gradient: a trainable module before the backbone (which must get its gradient)
      changes its outputs as it trains, so the backbone's inputs, evaluation batches' too, are new every epoch and
      their rows would never be read again. From the first training batch whose inputs need one, nothing is
      cached (logged once, saying why; what was cached before is dropped unsaved);
    - the batch is an evaluation batch (validation, test), or a training batch while `cache_training`: the inputs
      of training are the same every epoch. A plugin that augments its training inputs at random sets it to
      False: a cached feature of an augmented input is never stale (its key is the input's bytes) but never read
      again, and the file would grow every epoch.

    The cache opens on first use (logged once, with the rule that applies), is forgotten when weights load into
    the network (a checkpoint) or the backbone trains, and is written by the task at the end of each training
    epoch (after its validation) and each test (`save`).

    Args:
        describe: what besides its weights shapes the backbone's outputs, for the cache's name (`cache_path`):
            its repr (the layers and their settings) by default.
        key: the key of one input row, a numpy array (`row_key` of its bytes by default); rows that give the same
            features may share one (text leaves out the padding).

    Example::

        class Classifier(nn.Module):
            def __init__(self, body: nn.Module, features: int, classes: int) -> None:
                super().__init__()
                self.body, self.head, self.cached = body, nn.Linear(features, classes), FrozenFeatures()

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                return self.head(self.cached(self.body, images))
    """

    def __init__(self, describe: Callable[[nn.Module], str] = repr,
                 key: Callable[[np.ndarray], bytes] = row_key) -> None:
        super().__init__()
        self.describe, self.key = describe, key
        self.enabled, self.cache_training = True, True
        self.learned_inputs = False  # set by an input that needs a gradient: a module before the backbone trains
        self.cache: FeatureCache | None = None
        self._announced = False
        self.register_load_state_dict_post_hook(_forget)  # loaded weights (a checkpoint's) name a cache of their own

    def forward(self, module: nn.Module, inputs: torch.Tensor,
                compute: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The backbone's outputs for a batch, from the cache when the rule allows.

        Args:
            module: the backbone: its weights name the cache, and freezing all of them turns the cache on.
            inputs: the batch the backbone reads (one row per sample).
            compute: the features of a batch of input rows, through `module`: `module` itself by default.

        Returns:
            What `compute` returns; float32 on the inputs' device when it came from the cache.
        """
        compute = module if compute is None else compute
        if any(parameter.requires_grad for parameter in module.parameters()):
            self.cache = None  # its weights change from here on: a later frozen phase names its cache anew
            return compute(inputs)
        # Set on each call: Lightning restores each submodule's mode after validation by attribute.
        module.eval()
        if inputs.requires_grad:
            self._refuse_learned_inputs(module)
            return compute(inputs)
        if not self._caches():
            with torch.no_grad():
                return compute(inputs)
        if self.cache is None:
            self.cache = FeatureCache(self.path(module))
            self._announce(module)
        keys = [self.key(row) for row in inputs.detach().cpu().numpy()]
        with torch.no_grad():
            features = self.cache.lookup(keys, lambda missing: compute(inputs[missing]))
        return features.to(inputs.device)

    def path(self, module: nn.Module) -> Path:
        """The file that caches `module`'s outputs, with its weights as they are now."""
        return cache_path(module, self.describe(module))

    def save(self) -> None:
        """Write the rows added since the last save (nothing when no cache is open)."""
        if self.cache is not None:
            self.cache.save()

    def _caches(self) -> bool:
        exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return self.enabled and not self.learned_inputs and (self.cache_training or not self.training) and not exporting

    def _refuse_learned_inputs(self, module: nn.Module) -> None:
        if not self.learned_inputs:
            self.learned_inputs, self.cache = True, None
            if self.enabled:
                log.info("the frozen %s's outputs are not cached: its inputs need a gradient, so a module before it "
                         "trains and they change every epoch (a cache would grow with rows never read again)",
                         type(module).__name__)

    def _announce(self, module: nn.Module) -> None:
        if not self._announced:
            batches = ("every batch" if self.cache_training else
                       "validation and test batches only (the training inputs are augmented: new every epoch)")
            log.info("the frozen %s's outputs are cached in %s, for %s", type(module).__name__, self.cache.path,
                     batches)
            self._announced = True


def _forget(features: FrozenFeatures, incompatible_keys: object) -> None:
    features.cache = None


def frozen_features_in(module: nn.Module) -> list[FrozenFeatures]:
    """Every `FrozenFeatures` of a module: what a fine-tuning strategy switches on or off, and a task saves.

    Args:
        module: a network or a task.

    Returns:
        Its `FrozenFeatures` sub-modules, in `modules()` order (none for a network without a pretrained part).

    Example::

        for features in frozen_features_in(task.net):
            features.cache_training = False  # random augmentation: cache validation and test batches only
    """
    return [child for child in module.modules() if isinstance(child, FrozenFeatures)]
