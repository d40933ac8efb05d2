"""Compose real configs (as `converge train` would) and run the real CLI, in a fresh interpreter or in this one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
            config_name: str = "train") -> DictConfig:
    """The composed config of `converge <config_name> <overrides>`, writing into `output_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from converge.app.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    extra = [f"paths.output_dir={output_dir}", f"paths.output_root={Path(output_dir).parent}"] if output_dir else []
    with initialize_config_module(config_module="converge.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*overrides, *extra])


def run_cli(args: Sequence[str], cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `converge ARGS` in a fresh interpreter; returns the completed process (text output)."""
    command = [sys.executable, "-m", "converge.cli", *args]
    return subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def cli(args: Sequence[str]) -> int:
    """Run `converge ARGS` in this process, as the command does: the exit code returned, its messages on stdout
    and stderr (read them with pytest's capsys). Faster than `run_cli` (a fresh interpreter spends seconds on
    imports) where a test needs no process of its own.

    Example::

        assert cli(["train", "data=mine/csv", "data.source.path=missing.csv"]) == 2
        assert "missing.csv: no such file" in capsys.readouterr().err
    """
    from converge.cli import main

    try:
        return main(list(args))
    except SystemExit as exit_:  # argparse ends the process on a usage error (code 2) or --help (0)
        return exit_.code if isinstance(exit_.code, int) else 1


def predict(args: Sequence[str]) -> int:
    """Run `converge predict ARGS` in this process, as the command does: a user error is its one-line message
    on stderr and the returned code 2. Faster than `run_cli` where a test needs no fresh interpreter.

    Example::

        assert predict([str(bundle), "rows.csv", "--output", str(answers)]) == 0
    """
    from converge.errors import ConvergeError, report
    from converge.runtime.predict import main

    try:
        return main(list(args))
    except ConvergeError as error:
        return report(error)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a test's rendezvous)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
