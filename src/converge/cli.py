"""The `converge` command.

Dispatches to Hydra for the commands that compose configs (train, eval) and
answers the others (plugins, data) without importing torch or Lightning, so
`converge --help` and `converge plugins` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from converge.errors import ConvergeError, ReportError, UnknownNameError, report, run_reporting_errors

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
  plugins [--json]           registered plugins: tasks, configs and data sets
  data list | fetch NAME     built-in data sets; fetch one into the cache, checksum-verified
  report RUN_DIR|SWEEP_DIR   a finished run's report (state, best epoch, why it stopped, loss plot),
                             or one table comparing the jobs of a sweep (outputs/<task>/multiruns/<date>)
  tensorboard [RUN_DIR]      serve the TensorBoard dashboards of outputs/ (or RUN_DIR): --host, --port

Hydra's flags work on train, eval and export: --cfg job, --info, -m (sweep), hydra/launcher=...
Run `converge train --help` for the config groups and their options.
"""

_OVERRIDE = re.compile(r"^(\+\+|\+|~)?([A-Za-z_][\w/]*)(@[\w.]*)?=(.*)$")
_EXTRA_PLUGINS = re.compile(r"^[+~]*plugins\.extra=(.*)$")


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
        "train": lambda a: _hydra_command("train", "converge.app.train:train", a),
        "eval": lambda a: _hydra_command("eval", "converge.app.evaluate:evaluate", a),
        "export": lambda a: _hydra_command("export", "converge.app.export:export", a),
        "predict": lambda a: _runtime_command("converge.runtime.predict", a),
        "bench": lambda a: _runtime_command("converge.app.bench", a),
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


# -- Hydra commands -----------------------------------------------------------------------------
def _hydra_command(config_name: str, target: str, args: list[str]) -> int:
    _export_extra_plugins(args)
    _check_config_choices(args)
    if config_name == "train":
        from converge.app.cross_validation import fold_arguments

        args = fold_arguments(args)  # cv.folds=K: a multirun over the K folds
    import warnings

    # conf/hydra/launcher/submitit_*.yaml are checked against the launcher plugin's schema of the same name,
    # which Hydra does with a deprecation warning (the checking is what we want)
    warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema", category=UserWarning)
    args = [*args, *_scratch_output_for_other_ranks()]
    import hydra

    from converge.app.resolvers import register_resolvers

    register_resolvers()

    from converge.plugin import resolve

    started = False

    def task(cfg: Any) -> Any:
        nonlocal started
        started = True
        return run_reporting_errors(lambda: resolve(target)(cfg))

    sys.argv = [sys.argv[0], *args]  # Hydra reads its overrides and flags from sys.argv
    try:
        hydra.main(version_base="1.3", config_path="pkg://converge.conf", config_name=config_name)(task)()
    except SystemExit as exit_:
        if exit_.code == 1 and not started:
            return 2  # Hydra printed why the config does not compose: a user error
        raise
    return 0


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


def _export_extra_plugins(args: list[str]) -> None:
    """`plugins.extra=[a.b,c]` must be known before Hydra builds its search path, and in every DDP rank."""
    from converge.registry import EXTRA_PLUGINS_ENV

    for arg in args:
        match = _EXTRA_PLUGINS.match(arg)
        if match:
            modules = [m.strip(" '\"") for m in match.group(1).strip("[]").split(",") if m.strip(" '\"")]
            known = [m for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m]
            os.environ[EXTRA_PLUGINS_ENV] = ",".join(dict.fromkeys(known + modules))


def _check_config_choices(args: list[str]) -> None:
    """Answer `model=vision/cnnn` with suggestions before Hydra starts (sweeps: every value)."""
    from converge.registry import providers_by_option

    options = providers_by_option()
    for arg in args:
        match = _OVERRIDE.match(arg)
        if not match or match.group(1) == "~" or match.group(2) not in options:
            continue
        group, value = match.group(2), match.group(4)
        if "(" in value:  # sweep functions such as choice(...) / range(...): Hydra checks those
            continue
        for choice in (v.strip(" []") for v in value.split(",")):  # a list of options too: logger=[csv,mlflow]
            if choice and choice != "null" and choice not in options[group]:
                raise UnknownNameError(f"{group} config", choice, options[group],
                                       hint=f"Plugins add options under {group}/<plugin>/: see `converge plugins`.")


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
