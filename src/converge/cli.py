"""The `converge` command.

Dispatches to Hydra for the commands that compose configs (train, eval) and
answers the others (plugins, data) without importing torch or Lightning, so
`converge --help` and `converge plugins` stay fast.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from converge.errors import (
    ConfigError,
    ConvergeError,
    ReportError,
    UnknownNameError,
    report,
    run_reporting_errors,
    wrapped_user_error,
)

USAGE = """\
usage: converge COMMAND [ARGS]

Train, evaluate and inspect models composed from Hydra configs.

commands:
  train [OVERRIDES]          compose, train, test the best checkpoint, write the run directory
                             e.g. converge train experiment=vision/digits optim.lr=3e-3
  eval ckpt_path=PATH|last   evaluate a checkpoint on its test split (data=... for another data set)
  export ckpt_path=PATH|last write a verified bundle: export.formats=[onnx,torchscript,torch_export]
                             export.quantize=int8
  predict BUNDLE INPUT...    batch inference with onnxruntime: --output F, --batch-size N, --format int8
  bench BUNDLE [--json]      latency p50/p95/p99 and throughput of each format against eager PyTorch
  serve BUNDLE...            HTTP JSON API with dynamic batching: --port, --max-batch-size, --max-wait-ms
  drift BUNDLE INPUT...      drift score (PSI) of each statistic of the inputs against the training reference
  plugins [--json]           registered plugins: tasks, configs and data sets
  data list | fetch NAME     built-in data sets; fetch one into the cache, checksum-verified
  report RUN_DIR|SWEEP_DIR   a finished run's report (state, best epoch, why it stopped, loss plot),
                             or one table comparing the jobs of a sweep (outputs/<task>/multiruns/<date>)
  tensorboard [RUN_DIR]      serve the TensorBoard dashboards of outputs/ (or RUN_DIR): --host, --port

Hydra's flags work on train, eval and export: --cfg job, --info, -m (sweep), hydra/launcher=...
Run `converge train --help` for the config groups and their options.
"""

INTERNAL_ERROR = "converge: internal error (a bug in converge or a plugin, please report it with the traceback above)"
_HYDRA_COMMANDS = {
    "train": ("converge.app.train:train", "compose, train, test the best checkpoint, write the run directory"),
    "eval": ("converge.app.evaluate:evaluate", "evaluate a checkpoint on its test split (split=val: validation)"),
    "export": ("converge.app.export:export", "write a bundle of the checkpoint, verified against eager PyTorch"),
}
_EXAMPLES = {
    "train": ["converge train experiment=vision/digits optim.lr=3e-3 trainer.max_epochs=30",
              "converge train data=vision/mnist5k model=vision/resnet18 scheduler=onecycle",
              "converge train -m experiment=vision/digits optim.lr=1e-3,3e-3",
              "converge train experiment=vision/digits --cfg job      # print the composed config, run nothing"],
    "eval": ["converge eval task_name=vision-digits ckpt_path=best",
             "converge eval ckpt_path=outputs/vision-digits/runs/<date>/checkpoints/last.ckpt split=val"],
    "export": ["converge export task_name=vision-digits ckpt_path=best export.dir=digits-bundle",
               "converge export task_name=vision-digits ckpt_path=best export.quantize=int8"],
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command in ("-V", "--version"):
        from importlib.metadata import version

        print(f"converge {version('converge')}")
        return 0
    handlers: dict[str, Callable[[list[str]], int]] = {
        **{name: partial(_hydra_command, name) for name in _HYDRA_COMMANDS},
        "predict": lambda a: _runtime_command("converge.runtime.predict", a),
        "bench": lambda a: _runtime_command("converge.app.bench", a),
        "serve": lambda a: _runtime_command("converge.serving.command", a),
        "drift": lambda a: _runtime_command("converge.runtime.drift", a),
        "plugins": _plugins_command,
        "data": _data_command,
        "report": _report_command,
        "tensorboard": _tensorboard_command,
    }
    try:
        if command not in handlers:
            raise UnknownNameError("command", command, handlers, hint="See `converge --help`.")
        return handlers[command](rest)
    except ConvergeError as error:
        return report(error)
    except Exception:  # not the user's mistake: the traceback is for the report
        traceback.print_exc()
        print(INTERNAL_ERROR, file=sys.stderr)
        return 1


# -- Hydra commands -----------------------------------------------------------------------------
def _hydra_command(command: str, args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        print(_command_help(command), end="")
        return 0
    overrides = _parse_overrides(args)
    _export_extra_plugins(overrides)
    _check_config_choices(overrides)
    if command == "train":
        from converge.app.cross_validation import fold_arguments

        args = fold_arguments(args)  # cv.folds=K: a multirun over the K folds
    args = [*args, *_scratch_output_for_other_ranks()]
    if ("--cfg" in args or "-c" in args) and "--resolve" not in args:
        args.append("--resolve")  # print the values a run uses (its monitor is the task's own unless set)
    import hydra

    from converge.app.resolvers import register_resolvers

    register_resolvers()
    started = False

    def task(cfg: Any) -> Any:
        nonlocal started
        started = True
        return run_reporting_errors(lambda: _run_validated(command, cfg))

    try:
        with _hydra_raising(), _argv(args), warnings.catch_warnings():
            # conf/hydra/launcher/submitit_*.yaml are checked against the launcher plugin's schema of the same
            # name, which Hydra does with a deprecation warning (the checking is what we want)
            warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema",
                                    category=UserWarning)
            hydra.main(version_base="1.3", config_path="pkg://converge.conf", config_name=command)(task)()
    except SystemExit as exit_:  # a user error, already reported by run_reporting_errors, or Hydra's own exit
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except Exception as error:
        if started or not _is_config_error(error):
            raise
        raise _composition_error(error, args) from None
    return 0


def _run_validated(command: str, cfg: Any) -> Any:
    """Validate the composed config, then run the command; an invalid config leaves no run directory."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from converge.app.run_dir import discard_if_untrained
    from converge.app.validation import validate
    from converge.plugin import resolve

    try:
        validate(cfg, command)
    except Exception as error:
        if wrapped_user_error(error) is not None:  # a ConvergeError, or one a resolver raised inside OmegaConf's
            discard_if_untrained(Path(HydraConfig.get().runtime.output_dir))
        raise
    return resolve(_HYDRA_COMMANDS[command][0])(cfg)


@contextmanager
def _argv(args: list[str]) -> Iterator[None]:
    """Hydra reads its overrides and flags from sys.argv: give it ours, for the call only."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "converge", *args]
    try:
        yield
    finally:
        sys.argv = saved


@contextmanager
def _hydra_raising() -> Iterator[None]:
    """HYDRA_FULL_ERROR=1 for the call: Hydra raises its errors (made converge's here) instead of printing them."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _is_config_error(error: Exception) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(error, (HydraException, OmegaConfBaseException))


def _composition_error(error: Exception, args: list[str]) -> ConfigError:
    """Hydra's refusal of an override, as converge's: the full key, "did you mean" among its siblings (and the
    parameters of what the node builds), and `+key=value` when the key is new but can be added."""
    from omegaconf.errors import OmegaConfBaseException

    refusal = wrapped_user_error(error)  # a converge resolver's
    if isinstance(refusal, ConfigError):
        return refusal
    cause = error.__cause__
    if not isinstance(cause, OmegaConfBaseException) or cause.parent_node is None or not cause.full_key:
        return ConfigError(str(error).strip())
    key, name, parent = cause.full_key, str(cause.key), cause.parent_node
    where = key.rpartition(".")[0]
    target = parent.get("_target_") if hasattr(parent, "get") else None
    given = next((arg for arg in args if arg.split("=", 1)[0].lstrip("+~") == key), key)
    if name in _parameters_of(target):
        return ConfigError(f"{given}: {where} does not set '{name}' (a parameter of {target} left at its default): "
                           f"add it with +{given}")
    known = sorted({str(k) for k in parent} - {"_target_", "_partial_", "_recursive_", "_convert_"})
    if not known and target is None:
        return ConfigError(f"{given}: {where} is null or empty in this config (a chosen config removed it); "
                           f"set the whole node, or add the key with +{given}")
    close = difflib.get_close_matches(name, [*known, *_parameters_of(target)], n=3, cutoff=0.6)
    lines = [f"{given}: {where or 'the config'} has no key '{name}'."]
    if close:
        lines.append(f"Did you mean: {', '.join(f'{where}.{c}' if where else c for c in dict.fromkeys(close))}?")
    lines.append(f"Known: {', '.join(known)}" + (f" (and any parameter of {target}, with +)" if target else ""))
    if not close and target is None:
        lines.append(f"To add it to the config: +{given}")
    return ConfigError("\n".join(lines))


def _parameters_of(target: Any) -> list[str]:
    """The keys a `_target_` takes (none known: an open `**kwargs`, or a target that does not import)."""
    if not isinstance(target, str):
        return []
    from converge.app.validation import parameters

    try:
        return sorted(parameters(target)[0] or ())
    except ConvergeError:
        return []


def _parse_overrides(args: list[str]) -> list[Any]:
    """Hydra's own parsing of the overrides among `args` (its flags, such as `--cfg job`, set apart)."""
    from hydra._internal.utils import get_args_parser  # the parser hydra.main uses: no public twin
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(get_args_parser().parse_args(args).overrides)
    except OverrideParseException as error:
        raise ConfigError(str(error).strip()) from None


def _scratch_output_for_other_ranks() -> list[str]:
    """Under torchrun or SLURM every process runs this command. Only global rank 0 may write the run
    directory: the others give Hydra a scratch folder (Lightning broadcasts rank 0's checkpoint folder,
    and loggers and metrics.json are rank 0's alone)."""
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    if rank == "0":
        return []
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"converge-rank{rank}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null"]


def _export_extra_plugins(overrides: list[Any]) -> None:
    """`plugins.extra=[a.b,c]` must be known before Hydra builds its search path, and in every DDP rank."""
    from converge.registry import EXTRA_PLUGINS_ENV

    for override in overrides:
        if override.key_or_group == "plugins.extra" and not override.is_delete():
            value = override.value()
            modules = [str(m) for m in (value if isinstance(value, list) else [value]) if m]
            known = [m for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m]
            os.environ[EXTRA_PLUGINS_ENV] = ",".join(dict.fromkeys(known + modules))


def _check_config_choices(overrides: list[Any]) -> None:
    """Answer `model=vision/cnnn` with suggestions before Hydra starts (sweeps: every choice)."""
    from hydra.core.override_parser.types import ChoiceSweep

    from converge.registry import providers_by_option

    options = providers_by_option()
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or group not in options:
            continue
        if override.is_sweep_override() and not isinstance(override.value(), ChoiceSweep):
            continue  # range(...) / interval(...): Hydra checks those
        if override.is_sweep_override():
            choices = list(override.sweep_string_iterator())
        elif isinstance(override.value(), list):  # several options of one group: logger=[csv,mlflow]
            choices = [str(value) for value in override.value()]
        else:
            choices = [override.get_value_element_as_str()]
        for choice in choices:
            if choice and choice != "null" and choice not in options[group]:
                raise UnknownNameError(f"{group} config", choice, options[group],
                                       hint=f"Plugins add options under {group}/<plugin>/: see `converge plugins`.")


def _command_help(command: str) -> str:
    """`converge train --help`: the config groups and their options, the top-level keys and their defaults,
    examples; read from the registry and conf/<command>.yaml without composing (no experiment needed)."""
    import importlib.resources

    import yaml

    from converge.registry import providers_by_option

    primary = yaml.safe_load(importlib.resources.files("converge.conf").joinpath(f"{command}.yaml").read_text())
    groups = [next(iter(entry)) for entry in primary.get("defaults", []) if isinstance(entry, dict)]
    options = providers_by_option()
    lines = [f"usage: converge {command} [KEY=VALUE | GROUP=OPTION | +KEY=VALUE | ~KEY]... [HYDRA FLAGS]", "",
             _HYDRA_COMMANDS[command][1] + ".", "", "config groups (GROUP=OPTION; the default in brackets):"]
    defaults = {next(iter(e)): next(iter(e.values())) for e in primary.get("defaults", []) if isinstance(e, dict)}
    for group in (g for g in groups if g in options and g != "hydra"):
        names = [f"[{name}]" if name == defaults.get(group) else name for name in sorted(options[group])]
        lines.append(f"  {group:<15} {', '.join(names)}")
    lines += ["", f"keys (KEY=VALUE; defaults from conf/{command}.yaml):"]
    lines += [f"  {key}={value}" for key, value in _flat_keys(primary)]
    lines += ["", "examples:", *(f"  {example}" for example in _EXAMPLES[command]), "",
              f"Hydra's flags: -m (sweep), --cfg job, --info; Hydra's own help: converge {command} --hydra-help", ""]
    return "\n".join(lines)


def _flat_keys(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in node.items():
        if key in ("defaults", "hydra", "_target_"):
            continue
        if isinstance(value, dict) and value:
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", "null" if value is None else json.dumps(value).strip('"')


def _runtime_command(module: str, args: list[str]) -> int:
    from importlib import import_module

    return import_module(module).main(args)


# -- plugins and data ---------------------------------------------------------------------------
def _plugins_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge plugins", description="List registered plugins.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    options = parser.parse_args(args)
    from converge import registry

    report = []
    for name, plugin in sorted(registry.plugins().items()):
        report.append({
            "name": name,
            "source": registry.sources()[name],
            "description": plugin.description,
            "tasks": [{"name": t.name, "task_class": t.task_class, "description": t.description}
                      for t in plugin.tasks],
            "configs": plugin.options_by_group(),
            "datasets": [{"name": d.name, "description": d.description, "licence": d.licence,
                          "package": f"{d.package}=={d.version}"} for d in plugin.datasets],
        })
    if options.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print("no plugins registered: install one (pip install -e plugins/vision) or pass plugins.extra=[module]")
    for entry in report:
        print(f"{entry['name']}: {entry['description']}\n  from: {entry['source']}")
        for task in entry["tasks"]:
            print(f"  task       {task['name']} ({task['task_class']}): {task['description']}")
        for group, names in entry["configs"].items():
            print(f"  {group + ' ':<11}{', '.join(names)}")  # a long group name keeps its space
        for data in entry["datasets"]:
            print(f"  data set   {data['name']}: {data['description']} [{data['licence']}; {data['package']}]")
        print()
    return 0


def _data_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge data", description="Built-in data sets.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="data sets and whether they are cached")
    fetch_parser = sub.add_parser("fetch", help="download into the cache and verify checksums")
    fetch_parser.add_argument("name")
    fetch_parser.add_argument("--force", action="store_true", help="download again even if cached")
    options = parser.parse_args(args)
    from converge import registry
    from converge.fetch import data_dir, fetch

    datasets = {d.name: d for plugin in registry.plugins().values() for d in plugin.datasets}
    if options.action == "list":
        for name, dataset in sorted(datasets.items()):
            cached = "cached" if (data_dir() / name).is_dir() else "not cached"
            print(f"{name:<16} {cached:<11} {dataset.description}")
        return 0
    name = options.name.rpartition("/")[2]
    if name not in datasets:
        raise UnknownNameError("data set", options.name, datasets)
    print(fetch(datasets[name], force=options.force))
    return 0


def _report_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge report", description="Report a finished run, or compare a sweep.")
    parser.add_argument("path", help="a run directory, or a sweep directory (its numbered jobs)")
    options = parser.parse_args(args)
    from pathlib import Path

    from converge.diagnostics.report import report

    print(report(Path(options.path)))
    return 0


def _tensorboard_command(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge tensorboard",
                                     description="Serve the TensorBoard dashboards of runs until Ctrl-C.")
    parser.add_argument("run_dir", nargs="?", default="outputs",
                        help="a run directory, a task's or a sweep's folder of runs (default: outputs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves other machines too)")
    parser.add_argument("--port", type=int, default=6006)
    options = parser.parse_args(args)
    if not os.path.isdir(options.run_dir):
        raise ReportError(f"no directory {options.run_dir}: name a run directory or a folder of runs "
                          f"(converge train writes them under outputs/)")
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(logdir=options.run_dir, host=options.host, port=options.port)
    try:
        return 2 if board.main() else 0  # TensorBoard printed why it could not serve (e.g. the port is taken)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
