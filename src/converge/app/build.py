"""Turn a composed config into Lightning objects, with user errors made readable."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import DeviceStatsMonitor, LearningRateMonitor
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from converge import registry
from converge.data.module import DataModule
from converge.errors import CheckpointError, ConfigError, ConvergeError, HardwareError
from converge.plugin import resolve
from converge.task import CHECKPOINT_KEY, TaskModule
from converge.training.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from converge.training.finetuning import merge_checkpoint_adapters
from converge.training.pretrained import key_report

log = logging.getLogger("converge")


def instantiate_config(config: Any, what: str, passed: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a converge error raised inside passed through and others named: the config
    key whose values were refused (Hydra's `full_key`), those values and the reason.

    `passed` are keyword arguments handed to the constructor as they are: Hydra would merge them into the config,
    and a data spec holds thousands of ids (ml-100k's took 40 s through OmegaConf)."""
    try:
        if passed is None:
            return instantiate(config, **kwargs)
        factory = instantiate(config, _partial_=True, **kwargs)
        try:
            return factory(**passed)
        except ConvergeError:
            raise
        except Exception as error:  # as Hydra reports a constructor's refusal
            raise InstantiationException(f"full_key: {what}") from error
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, ConvergeError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        key = (re.findall(r"^full_key: (\S+)$", str(error), re.MULTILINE) or [what])[-1]
        node = _node_named(config, key)
        values = {name: value for name, value in plain(node).items() if not str(name).startswith("_")}
        label, message = refusal(key, str(node.get("_target_", what)), values, error.__cause__ or error)
        raise ConfigError(f"{label}: {message}") from error


def _node_named(config: DictConfig, key: str) -> DictConfig:
    """The node of `config` (or `config` itself) whose full key is `key`: the deepest whose path ends it."""
    parts = key.split(".")
    for start in range(len(parts)):
        node = OmegaConf.select(config, ".".join(parts[start:]))
        if isinstance(node, DictConfig):
            return node
    return config


def refusal(path: str, target: str, values: Mapping[str, Any], error: BaseException) -> tuple[str, str]:
    """(label, message) of values a constructor refused: `optim.lr=-1`, `torch.optim.AdamW refused it: ...`.

    The label names the keys whose names or values the error mentions (torch says "Invalid learning rate: -1",
    never "lr"), or all of them when it mentions none."""
    text = str(error).strip() or type(error).__name__
    named = [key for key, value in values.items() if _mentions(text, key, value)] or list(values)
    label = " ".join(f"{path}.{key}={shown(values[key])}" for key in named) or path
    return label, f"{target} refused {'it' if len(named) == 1 else 'them'}: {text}"


def _mentions(text: str, key: str, value: Any) -> bool:
    words = [re.escape(str(key))] + ([re.escape(str(value))] if isinstance(value, (int, float, str)) else [])
    return any(re.search(rf"(?<![\w.]){word}(?![\w.])", text, re.IGNORECASE) for word in words)


def shown(value: Any) -> str:
    """A config value the way it is written on the command line (`[32,64]`, `null`, `true`)."""
    return json.dumps(value, separators=(",", ":"), default=str).strip('"') if value is not None else "null"


def plain(config: Any) -> Any:
    """A resolved plain-Python copy of a config node (what checkpoints may store)."""
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def build_datamodule(data: DictConfig, seed: int = 0) -> DataModule:
    """The data module of `data`, drawing training order and augmentations from (`seed`, epoch)."""
    datamodule = instantiate_config(data, "data module", _convert_="all")
    if not isinstance(datamodule, DataModule):
        raise ConfigError(f"data config builds a {type(datamodule).__name__}, not a converge DataModule")
    datamodule.sampling_seed = seed
    return datamodule


def build_task(cfg: DictConfig, spec: Mapping[str, Any]) -> TaskModule:
    """The task named by `cfg.model`, built from plain data only (so checkpoints stay weights-only)."""
    task = instantiate_config(
        cfg.model, "model", passed={"spec": dict(spec)}, optim=plain(cfg.optim),
        scheduler=plain(cfg.scheduler) or None, data=plain(cfg.data), _recursive_=False, _convert_="all",
    )
    if not isinstance(task, TaskModule):
        raise ConfigError(f"model config builds a {type(task).__name__}, not a converge TaskModule")
    return task


def load_task(path: Any) -> tuple[TaskModule, dict[str, Any]]:
    """Rebuild a trained task from a checkpoint, through the plugin registry (never by unpickling)."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(f"{path}: not written by converge (no '{CHECKPOINT_KEY}' entry)")
    _, task = registry.find_task(meta["task"])
    task_class = resolve(task.task_class)
    model = task_class(**checkpoint["hyper_parameters"])
    merge_adapters = merge_checkpoint_adapters(model, checkpoint)  # finetune=lora: plain weights once loaded
    model.on_load_checkpoint(checkpoint)
    check_fits(model, checkpoint, path)
    model.load_state_dict(checkpoint["state_dict"])
    if merge_adapters:
        merge_adapters()
    return model, checkpoint


def check_fits(task: TaskModule, checkpoint: Mapping[str, Any], path: Any) -> None:
    """Refuse a checkpoint whose weights do not fit `task`, naming every key that differs (torch's strict load
    stops at the first, as an error that reads like a bug in converge).

    Raises:
        CheckpointError: a key of the task or of the checkpoint missing from the other, or of another shape.
    """
    report = key_report(task, checkpoint["state_dict"])
    if not report.clean:
        raise CheckpointError(
            f"{path}: its weights do not fit {type(task).__name__} as configured now:\n"
            f"{report.table(applied=False)}\n"
            "It was written with other model settings (model.*) or by another version of the task's plugin. "
            "To start a new run from what fits, use it as pretrained weights: "
            f"pretrained.source={path} pretrained.strict=false")


# Callbacks that only report to the run's loggers: Lightning refuses to start them in a run without any.
NEEDS_LOGGER = (LearningRateMonitor, DeviceStatsMonitor)


def build_callbacks(callbacks: DictConfig | None, with_loggers: bool = True) -> list[pl.Callback]:
    """Every non-null entry of the `callbacks` group (so `~callbacks.x` and `callbacks.x=null` remove one).

    An entry without `_target_` only tunes a callback the chosen group does not have (an experiment's
    `callbacks.early_stopping.patience` under `callbacks=none`): there is nothing to build. A run without
    loggers (`logger=none`) leaves out the callbacks that only report to them, so every logger group works
    with the default callbacks."""
    built = []
    for name, node in (callbacks or {}).items():
        if node is None:
            continue
        if "_target_" not in node:  # warned, so a misspelt or forgotten `_target_` is not silently dropped
            log.warning("callbacks.%s has no _target_, so it builds nothing (settings for a callback that is "
                        "not in the chosen callbacks group?)", name)
            continue
        callback = instantiate_config(node, f"callback '{name}'")
        if not with_loggers and isinstance(callback, NEEDS_LOGGER):
            log.info("callbacks.%s is left out: it reports to the loggers, and this run has none", name)
            continue
        built.append(callback)
    return built


def check_hardware(trainer: DictConfig) -> None:
    """Refuse, in one sentence, hardware this machine does not have (before any process starts)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        devices = trainer.get("devices", 1)
        wanted = devices if isinstance(devices, int) and devices > 0 else 1
        if available < wanted:
            raise HardwareError(
                f"the hardware config asks for {wanted} GPU(s) (trainer.accelerator={accelerator}, "
                f"trainer.devices={devices}) but this machine has {available}. "
                f"Use hardware=cpu, hardware=ddp_cpu or hardware=auto."
            )
    nodes = trainer.get("num_nodes", 1)
    if isinstance(nodes, int) and nodes > 1 and not _cluster_started_this_process():
        raise HardwareError(
            f"trainer.num_nodes={nodes}: a run over several machines is started on each of them by torchrun or "
            f"SLURM (see conf/hardware/multinode.yaml), which this process was not. On one machine use "
            f"hardware=ddp_cpu or hardware=ddp."
        )


def _cluster_started_this_process() -> bool:
    """torchrun sets WORLD_SIZE and friends; SLURM sets SLURM_NTASKS (Lightning's own cluster environments)."""
    return "WORLD_SIZE" in os.environ or "SLURM_NTASKS" in os.environ


def use_threads(cfg: DictConfig) -> int:
    """Set torch's intra-op threads from `hardware.threads`; by default the cores this process may use, shared
    among the processes of a CPU DDP world on this machine (2 ranks on 2 cores: 1 each, not 2 contending)."""
    threads = (cfg.get("hardware") or {}).get("threads")
    if not threads:
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        devices = cfg.trainer.get("devices", 1)
        ranks = devices if str(cfg.trainer.get("accelerator")) == "cpu" and isinstance(devices, int) else 1
        threads = max(1, allowed // max(1, ranks))
    torch.set_num_threads(int(threads))
    return int(threads)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any]) -> pl.Trainer:
    check_hardware(cfg.trainer)
    use_threads(cfg)
    trainer = instantiate_config(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: the config chose none
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer
