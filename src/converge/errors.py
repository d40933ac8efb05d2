"""Errors a user can cause.

Each one is rendered by the CLI as a single message and exit code 2, never as a
traceback: the message must say what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable
from typing import Any


class ConvergeError(Exception):
    """Base of every error caused by user input (config, files, names, hardware)."""

    exit_code = 2


class ConfigError(ConvergeError):
    """A composed config that cannot run (bad value, missing key, bad override)."""


class UnknownNameError(ConvergeError):
    """A name (plugin, config option, data set, task) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
        lines = [f"unknown {kind} '{name}'."]
        if close:
            lines.append(f"Did you mean: {', '.join(close)}?")
        lines.append(f"Known: {', '.join(known) if known else '(none registered)'}")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))
        self.name, self.known, self.suggestions = name, known, close


class PluginError(ConvergeError):
    """A plugin that cannot be loaded, or two plugins that collide."""


class CheckpointError(ConvergeError):
    """A checkpoint that is missing, corrupt or not one of ours."""


class DataError(ConvergeError):
    """Data that is missing, corrupt, offline or malformed (names the file)."""


class HardwareError(ConvergeError):
    """Hardware asked for that this machine does not have."""


class ExportError(ConvergeError):
    """An export that cannot be written, or whose model does not match eager within tolerance."""


class TrainingDiverged(ConvergeError):
    """The loss or the weights became non-finite: training stops at once, keeping the last finite checkpoints."""


class ReportError(ConvergeError):
    """A folder that is not a finished converge run or sweep, so there is nothing to report."""


def report(error: ConvergeError) -> int:
    """Print a user error as one message on stderr; return its exit code (2)."""
    print(f"converge: error: {error}", file=sys.stderr)
    return error.exit_code


def run_reporting_errors(function: Callable[[], Any]) -> Any:
    """Run a command body; a user error becomes its message and exit code 2 (even inside Hydra, whose callbacks
    and sweepers call this, so that it never wraps the error in a traceback of its own)."""
    try:
        return function()
    except Exception as error:
        user_error = wrapped_user_error(error)  # itself, or one a converge resolver raised inside OmegaConf's
        if user_error is None:
            raise
        sys.stderr.flush()
        raise SystemExit(report(user_error)) from None


def wrapped_user_error(error: BaseException) -> ConvergeError | None:
    """The ConvergeError that `error` was raised in handling of, if any: a converge resolver's refusal reaches us
    wrapped in OmegaConf's InterpolationResolutionError (which keeps it as the context, not always the cause)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConvergeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
