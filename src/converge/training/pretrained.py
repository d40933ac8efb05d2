"""Starting weights from elsewhere (the `pretrained` config): where they are, what they hold, what of them loads.

A source is one string, so one config key says it all:

    package:<distribution>[/<path>]   files an installed distribution ships (found offline, through its metadata)
    run:<task_name>                   the checkpoint the newest finished run of that task kept
    <folder>                          a Hugging Face-format folder (model.safetensors or pytorch_model.bin)
    <file>                            a .safetensors file, a torch state dict, or a converge/Lightning checkpoint

Weights are read as safetensors or with `weights_only=True`: loading a source never runs code from it. What
loads is reported in one table (loaded, missing, unexpected, shape-mismatched keys); any mismatch is refused
unless `strict=false`, which loads the keys that fit and leaves the rest as initialised (a new head).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from converge.errors import CheckpointError, ConfigError
from converge.sources import locate, weights_file
from converge.training.checkpoint_io import BEST, load_weights_only, resolve_checkpoint

log = logging.getLogger("converge")

RUN = "run:"
PRETRAINED_ADVICE = ("Set pretrained.strict=false to load the keys that fit and keep the others as initialised "
                     "(a new head), or pretrained.prefix / pretrained.into to choose what loads where.")
State = dict[str, torch.Tensor]


def read_weights(source: str, output_root: str | Path = "outputs") -> tuple[State, bool]:
    """The tensors of a source, and whether they are a converge checkpoint's (a whole task's state dict)."""
    if source.startswith(RUN):
        try:
            path = resolve_checkpoint(BEST, output_root, source.removeprefix(RUN))
        except CheckpointError as error:
            raise ConfigError(f"pretrained.source={source}: {error}") from None
    else:
        path = locate(source)
    if path.is_dir():
        path = weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), False
    content = load_weights_only(path)
    is_checkpoint = isinstance(content, dict) and isinstance(content.get("state_dict"), dict)
    state = content["state_dict"] if is_checkpoint else content
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(f"pretrained source {path}: neither a state dict (names to tensors) nor a checkpoint")
    return state, is_checkpoint


@dataclass
class LoadReport:
    """What loading a state dict into a module did, key by key."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # the module's keys the source lacks: left as initialised
    unexpected: list[str] = field(default_factory=list)  # the source's keys the module lacks: ignored
    mismatched: dict[str, str] = field(default_factory=dict)  # key -> "source shape vs module shape": skipped

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self, applied: bool = True) -> str:
        """The keys in a table; `applied=False` for a load that was refused (then nothing was left or ignored)."""
        rows = [("loaded" if applied else "fitting", f"{len(self.loaded)} keys", "")]
        rows += [("missing", key, "left as initialised" if applied else "") for key in self.missing]
        rows += [("unexpected", key, "ignored" if applied else "") for key in self.unexpected]
        rows += [("shape mismatch", key, shapes) for key, shapes in self.mismatched.items()]
        width = max(len(key) for _, key, _ in rows)
        return "\n".join(f"  {kind:<15}{key:<{width}}  {note}".rstrip() for kind, key, note in rows)


def key_report(module: nn.Module, state: Mapping[str, torch.Tensor]) -> LoadReport:
    """How `state` fits `module`'s own state dict, key by key (nothing is loaded)."""
    own = module.state_dict()
    report = LoadReport(missing=sorted(own.keys() - state.keys()), unexpected=sorted(state.keys() - own.keys()))
    for key in sorted(state.keys() & own.keys()):
        if state[key].shape == own[key].shape:
            report.loaded.append(key)
        else:
            report.mismatched[key] = f"{list(state[key].shape)} in the source vs {list(own[key].shape)}"
    return report


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, prefix: str = "",
               what: str = "pretrained weights", advice: str = PRETRAINED_ADVICE) -> LoadReport:
    """Load the keys of `state` under `prefix` (stripped) into `module`, reporting every key that does not fit.

    Args:
        module: where the weights go (a task, or the part its `backbone()` names).
        state: names to tensors.
        strict: refuse any missing, unexpected or shape-mismatched key; False loads the keys that fit.
        prefix: take only the keys under it, without it (`encoder.` of a whole model for its encoder).
        what: how the error message names the source.
        advice: the last line of a mismatch's message: what the user can change (the `pretrained.*` keys by default).

    Returns:
        The report (also logged as a table).

    Raises:
        ConfigError: a mismatch with `strict`, or no key of the source fits the module at all.
    """
    chosen = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    report = key_report(module, chosen)
    log.info("%s into %s:\n%s", what, type(module).__name__, report.table())
    if not report.loaded:
        raise ConfigError(f"{what}: no key fits {type(module).__name__} (prefix '{prefix}'):\n"
                          f"{report.table(applied=False)}\n{advice}")
    if strict and not report.clean:
        raise ConfigError(f"{what} do not match {type(module).__name__}:\n{report.table(applied=False)}\n{advice}")
    module.load_state_dict({key: chosen[key] for key in report.loaded}, strict=False)
    return report


def module_path(root: nn.Module, part: nn.Module) -> str:
    """The qualified name of `part` inside `root`, with a trailing dot ('' for root itself)."""
    for name, module in root.named_modules():
        if module is part:
            return f"{name}." if name else ""
    raise ConfigError(f"{type(part).__name__} is not a sub-module of {type(root).__name__}")


def load_pretrained(task: nn.Module, source: str, into: str = "backbone", prefix: str | None = None,
                    strict: bool = True, output_root: str | Path = "outputs") -> LoadReport:
    """Initialise `task`, or the part its `backbone()` names, from a source (the `pretrained` config).

    A converge checkpoint holds a whole task: loaded into the backbone, its keys are taken under the backbone's
    own path in the task unless `prefix` says otherwise (so a trained task of the same plugin seeds the backbone
    of a new one, whatever its head).
    """
    if into not in ("backbone", "task"):
        raise ConfigError(f"pretrained.into must be backbone or task, got {into}")
    target = task.backbone() if into == "backbone" else task
    if target is None:
        raise ConfigError(f"{type(task).__name__} has no backbone(): set pretrained.into=task to load the whole task")
    state, is_checkpoint = read_weights(source, output_root)
    if prefix is None:
        prefix = module_path(task, target) if is_checkpoint else ""
    return load_state(target, state, strict=strict, prefix=prefix, what=f"pretrained weights {source}")
