"""Check a composed config before anything runs: every mistake at once, one line each, exit code 2.

The schema of a node with a `_target_` is the signature of what it builds: its parameter names are the keys
it takes and their type annotations (ranges as `typing.Annotated` constraints, e.g. pydantic's `PositiveInt`)
the values allowed, checked with pydantic. So a plugin declares its config's schema by writing an annotated
constructor, the one place it must write anyway, and the check can never drift from what the build accepts.
A `**kwargs` parameter is followed up the MRO when the constructor hands it to `super().__init__` (a plugin's
DataModule passes `**loader` to converge's DataModule), and otherwise accepts any key. The keys converge
itself reads (seed, monitor, cv, paths, scheduler, export, ...) are the pydantic models below. Partial
targets (the optimiser, the LR schedule) are also built once on a dummy parameter, so that torch's own
refusals (`Invalid learning rate: -1`) surface here, named by key. Nothing is loaded: only classes imported.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from functools import cache
from typing import Annotated, Any, Literal

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)

from converge.app.build import refusal, shown
from converge.errors import ConfigError, PluginError
from converge.plugin import resolve
from converge.runtime.bundle import FORMAT_FILES

_LAX = ConfigDict(arbitrary_types_allowed=True, coerce_numbers_to_str=True)  # `task_name=2024` is a name
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_MISSING = "???"
_NO_VALUE = object()  # a problem line that names no value (a required key, or one already named in its label)

Name = Annotated[str, Field(min_length=1)]


class _Closed(BaseModel):
    """A node whose keys are all known: any other key is a mistake."""

    model_config = _LAX | ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A node that holds other keys too (checked elsewhere, e.g. against a constructor)."""

    model_config = _LAX | ConfigDict(extra="allow")


class Monitor(_Closed):
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    keep: Literal["best", "last"] = "best"


class CrossValidation(_Closed):
    folds: Annotated[int, Field(ge=2)] | None = None


class Paths(_Closed):
    output_root: Name = "outputs"
    output_dir: Name | None = None


class Plugins(_Closed):
    extra: list[Name] = []


class LRScheduler(_Closed):
    """Lightning's lr_scheduler keys beside the partial `schedule`."""

    schedule: dict[str, Any]
    interval: Literal["step", "epoch"] = "epoch"
    frequency: PositiveInt = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None


def _devices(value: Any) -> Any:
    counts = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1)
    indices = isinstance(value, list) and all(isinstance(index, int) and index >= 0 for index in value) and value
    named = isinstance(value, str) and re.fullmatch(r"auto|-1|[1-9]\d*|\d+(,\d*)+", value)
    if not (counts or indices or named):
        raise ValueError("devices is a count >= 1, -1 (every device), auto, or a list of device indices")
    return value


def _max_epochs(value: int) -> int:
    if value == 0:
        raise ValueError("0 would train nothing and then test the untrained model: to test a checkpoint, "
                         "converge eval ckpt_path=...; -1 trains until early stopping")
    return value


class Hardware(_Open):
    """Trainer keys whose ranges the Trainer's signature does not state (its other keys: its signature)."""

    devices: Annotated[Any, AfterValidator(_devices)] = "auto"
    num_nodes: PositiveInt = 1
    max_epochs: Annotated[int, Field(ge=-1), AfterValidator(_max_epochs)] | None = None
    min_epochs: Annotated[int, Field(ge=0)] | None = None
    check_val_every_n_epoch: PositiveInt | None = 1
    log_every_n_steps: PositiveInt | None = None


class _Command(_Open):
    task_name: Name
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's seeds
    ckpt_path: Name | None = None
    plugins: Plugins = Plugins()
    paths: Paths = Paths()
    trainer: Hardware | None = None


class Train(_Command):
    test_after_fit: bool = True
    cv: CrossValidation = CrossValidation()
    monitor: Monitor = Monitor()
    scheduler: Annotated[LRScheduler | None, BeforeValidator(lambda node: node or None)] = None  # {}: none


class Eval(_Command):
    ckpt_path: Name
    split: Literal["test", "val"] = "test"


class Tolerance(_Closed):
    atol: NonNegativeFloat
    rtol: NonNegativeFloat


class Export(_Closed):
    dir: Name
    formats: list[Literal[tuple(name for name in FORMAT_FILES if name != "int8")]]  # type: ignore[misc]
    quantize: Literal["int8"] | None = None
    int8_method: Literal["auto", "static", "dynamic"] = "auto"
    calibration_batches: PositiveInt = 8
    opset: PositiveInt = 18
    check_batch_size: PositiveInt = 16
    tolerance: dict[Literal["fp32", "int8"], Tolerance]
    max_metric_drop: dict[Literal["fp32", "int8"], NonNegativeFloat]


class ExportCommand(_Command):
    ckpt_path: Name
    export: Export


SCHEMAS: dict[str, type[_Command]] = {"train": Train, "eval": Eval, "export": ExportCommand}
Problems = dict[str, tuple[Any, list[str]]]  # key -> (its value, what is wrong with it)


def validate(cfg: DictConfig, command: str) -> None:
    """Refuse a config that cannot run, before anything runs.

    Args:
        cfg: the config Hydra composed for `command`.
        command: `train`, `eval` or `export` (which top-level keys it reads: `SCHEMAS`).

    Raises:
        ConfigError: one line per wrong key (its value and what is allowed), every mistake at once.

    Example:
        validate(compose("train", ["experiment=vision/digits", "optim.lr=-1"]), "train")
        # ConfigError: optim.lr=-1: torch.optim.AdamW refused it: Invalid learning rate: -1
    """
    problems = _problems(cfg, command)
    if problems:
        lines = [f"{key}{'' if value is _NO_VALUE else '=' + shown(value)}: {'; '.join(dict.fromkeys(messages))}"
                 for key, (value, messages) in problems.items()]
        plural = "s" * (len(lines) > 1)
        raise ConfigError(f"the config cannot run ({len(lines)} problem{plural}; nothing was started):\n  "
                          + "\n  ".join(lines))


def _problems(cfg: DictConfig, command: str) -> Problems:
    problems: Problems = {}
    for key in sorted(OmegaConf.missing_keys(cfg)):
        _add(problems, key, _NO_VALUE, _required(key, command))
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:  # an interpolation that leads nowhere: nothing else can be checked
        if not problems:  # (one to a missing value: that value is the problem, already said)
            _add(problems, str(error.full_key), _NO_VALUE, str(error).splitlines()[0])
        return problems
    _check_model(problems, "", config, SCHEMAS[command])
    for path, node in _targets("", config):
        _check_target(problems, path, node)
    _check_partial(problems, "optim", config.get("optim"), _dummy_optimizer)
    _check_partial(problems, "scheduler.schedule", (config.get("scheduler") or {}).get("schedule"), _dummy_schedule)
    return problems


def _add(problems: Problems, key: str, value: Any, message: str) -> None:
    problems.setdefault(key, (value, []))[1].append(message)


def _required(key: str, command: str) -> str:
    group = key.split(".")[0]
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    chosen = f"{group}={choices[group]}" if choices.get(group) else f"converge {command}"
    return f"required by {chosen}: set {key}=VALUE"


# -- the keys converge reads ---------------------------------------------------------------------------------
def _check_model(problems: Problems, path: str, value: Any, model: type[BaseModel]) -> None:
    """Check `value` against `model`; unknown keys of closed nodes get "did you mean" (pydantic's words else)."""
    if isinstance(value, dict):
        for key, item in value.items():
            field = model.model_fields.get(key)
            if field is None and model.model_config.get("extra") == "forbid":
                _add(problems, _join(path, key), item, _unknown(key, list(model.model_fields), path))
            elif field is not None and item and _closed_model(field.annotation):
                _check_model(problems, _join(path, key), item, _closed_model(field.annotation))
    try:
        model.model_validate(value)
    except ValidationError as error:
        _add_errors(problems, path, value, error)


def _closed_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that is one, or optionally one (`Monitor | None`)."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    for candidate in (annotation, *members):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _add_errors(problems: Problems, path: str, value: Any, error: ValidationError) -> None:
    """pydantic's errors by the config key they are about (its locations also name union members: dropped; the
    errors of one key are then the members' alternatives, joined by "or")."""
    found: dict[str, tuple[Any, list[str]]] = {}
    for detail in error.errors(include_url=False, include_context=False):
        key, node = path, value
        for part in detail["loc"]:
            if isinstance(node, dict) and part in node:
                key, node = _join(key, str(part)), node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                key, node = f"{key}[{part}]", node[part]
            else:
                break
        if node == _MISSING or (detail["type"] == "extra_forbidden" and key in problems):
            continue  # already reported: as required, or with suggestions
        unknown = detail["type"] == "extra_forbidden"
        found.setdefault(key, (node, []))[1].append("unknown key" if unknown else
                                                    detail["msg"].removeprefix("Value error, "))
    for key, (node, alternatives) in found.items():
        _add(problems, key, node, " or ".join(dict.fromkeys(alternatives)))


# -- the nodes that build something --------------------------------------------------------------------------
def _targets(path: str, node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node with a `_target_`, by key path (lists too: transforms)."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield path, node
        for key, item in node.items():
            yield from _targets(_join(path, str(key)), item)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _targets(f"{path}[{index}]", item)


def _check_target(problems: Problems, path: str, node: dict[str, Any]) -> None:
    try:
        accepted, annotations = parameters(node["_target_"])
    except PluginError as error:
        _add(problems, _join(path, "_target_"), node["_target_"], str(error))
        return
    for key, value in node.items():
        if key in _HYDRA_KEYS or value == _MISSING:
            continue
        if accepted is not None and key not in accepted:
            _add(problems, _join(path, key), value, _unknown(key, sorted(accepted), path, node["_target_"]))
        elif key in annotations and not (isinstance(value, dict) and "_target_" in value):
            try:
                _adapter(annotations[key]).validate_python(value)
            except ValidationError as error:
                _add_errors(problems, _join(path, key), value, error)


@cache
def parameters(target: str) -> tuple[frozenset[str] | None, dict[str, Any]]:
    """The keyword parameters `target` takes (None: any, through `**kwargs`) and their annotations.

    Raises:
        PluginError: `target` cannot be imported."""
    built = _import(target)
    functions = [klass.__dict__["__init__"] for klass in built.__mro__ if "__init__" in klass.__dict__] \
        if isinstance(built, type) else [built]
    names: set[str] = set()
    annotations: dict[str, Any] = {}
    for function in functions:
        parameters = inspect.signature(function).parameters.values()
        hints = _hints(function)
        for parameter in parameters:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
                annotations.setdefault(parameter.name, hints.get(parameter.name, Any))
        forwarded = next((p.name for p in parameters if p.kind is p.VAR_KEYWORD), None)
        if forwarded is None:
            return frozenset(names - {"self"}), annotations
        if not _passes_to_super(function, forwarded):
            return None, annotations
    return None, annotations


def _import(target: str) -> Any:
    try:
        return resolve(target)
    except ValueError as error:  # not an import path at all ("", "foo")
        raise PluginError(f"cannot import '{target}': {error}") from None


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations (with their Annotated constraints); none where they cannot be resolved."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # a name imported only for type checkers: that callable's values go unchecked
        return {}


def _passes_to_super(function: Callable[..., Any], kwargs: str) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return re.search(rf"super\(\)\.__init__\((?:[^()]|\([^()]*\))*\*\*{kwargs}\b", source) is not None


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation, config=_LAX)
    except Exception:  # a type pydantic cannot check (a protocol, a bare TypeVar): anything goes
        return TypeAdapter(Any)


def _unknown(key: str, known: list[str], path: str, target: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    where = f"{path or 'the config'}{f' ({target})' if target else ''}"
    suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown key: {where} takes no '{key}'.{suggestion} Known: {', '.join(k for k in known if k != 'self')}"


# -- partial targets, built once on dummies ------------------------------------------------------------------
def _dummy_optimizer(make: Callable[..., Any]) -> Any:
    return make([torch.nn.Parameter(torch.zeros(1))])


def _dummy_schedule(make: Callable[..., Any]) -> Any:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    takes_length = "total_steps" in inspect.signature(make).parameters
    return make(optimizer, **({"total_steps": 100} if takes_length else {}))


def _check_partial(problems: Problems, path: str, node: Any, build: Callable[[Callable[..., Any]], Any]) -> None:
    """torch's own range checks (`Invalid learning rate: -1`), on a node whose values are of the right types."""
    if not isinstance(node, dict) or "_target_" not in node or any(key.startswith(path) for key in problems):
        return
    from hydra.utils import instantiate

    try:
        build(instantiate(node))
    except Exception as error:
        values = {key: value for key, value in node.items() if key not in _HYDRA_KEYS}
        label, message = refusal(path, node["_target_"], values, error)
        _add(problems, label, _NO_VALUE, message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
