"""The search space, written in Hydra's sweep syntax, as Optuna distributions.

One syntax for both places a user writes it: `hydra.sweeper.params` in a YAML search space
(`optim.lr: tag(log, interval(1e-4, 1e-1))`) and sweep overrides on the command line
(`optim.lr='tag(log, interval(1e-5, 1e-3))'`, `model.net.dim=32,64,128`). A command-line entry replaces
the YAML one of the same key; a plain value on the command line (`optim.lr=1e-3`) takes the key out of
the search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from converge.errors import ConfigError

_PRIMITIVE = (str, int, float, bool)


@dataclass(frozen=True)
class Param:
    """One searched key: its Optuna distribution and, for categorical choices, each choice's override text."""

    key: str  # as written in the override, prefix included (`+trainer.gradient_clip_val`)
    distribution: BaseDistribution
    texts: Mapping[Any, str] = field(default_factory=dict)

    def override(self, value: Any) -> str:
        """The override a trial runs with when Optuna samples `value`."""
        return f"{self.key}={self.texts.get(value, Transformer.str(value))}"


@dataclass(frozen=True)
class SearchSpace:
    params: dict[str, Param]
    fixed: list[str]  # the command's plain overrides, passed unchanged to every trial

    def describe(self) -> dict[str, str]:
        """key -> distribution, plain data: what the study remembers to refuse a resume with another space."""
        return {key: repr(param.distribution) for key, param in sorted(self.params.items())}


def search_space(yaml_params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
    """Merge the YAML search space with the command line's overrides (the command line wins)."""
    parser = OverridesParser.create()
    params: dict[str, Param] = {}
    for key, value in (yaml_params or {}).items():
        override = _parse(parser, f"{key}={value}", where="hydra.sweeper.params")
        if not override.is_sweep_override():
            raise ConfigError(f"hydra.sweeper.params.{key}: '{value}' is one value, not a range to search; use "
                              "interval(a, b), tag(log, interval(a, b)), range(a, b) or choice(a, b, ...)")
        params[override.key_or_group] = _param(override)
    fixed = []
    for argument in arguments:
        override = _parse(parser, argument, where="command line")
        if override.is_sweep_override():
            params[override.key_or_group] = _param(override)
        else:
            params.pop(override.key_or_group, None)
            fixed.append(argument)
    if not params:
        raise ConfigError("the search space is empty: set hydra.sweeper.params in the hparams_search config "
                          "or give a sweep override such as optim.lr='tag(log, interval(1e-4, 1e-1))'")
    return SearchSpace(params, fixed)


def _parse(parser: OverridesParser, text: str, where: str) -> Override:
    try:
        return parser.parse_override(text)
    except Exception as error:  # Hydra's grammar errors name the position; keep its message
        raise ConfigError(f"{where}: cannot parse '{text}': {error}") from None


def _param(override: Override) -> Param:
    try:
        return _distribution(override)
    except ValueError as error:  # an empty range, or Optuna's own checks (low <= high, low > 0 on a log scale)
        raise ConfigError(f"{override.input_line}: not a range Optuna can search ({error})") from None


def _distribution(override: Override) -> Param:
    key, value = override.get_key_element(), override.value()
    if isinstance(value, IntervalSweep):
        return Param(key, FloatDistribution(value.start, value.end, log="log" in value.tags))
    choices = list(override.sweep_iterator())
    if not choices:
        raise ValueError("it holds no value")
    if isinstance(value, RangeSweep) and all(isinstance(v, int) for v in (value.start, value.stop, value.step)) \
            and value.step > 0 and not value.shuffle:
        log = "log" in value.tags
        if log and value.step != 1:
            raise ConfigError(f"{key}: tag(log, range(...)) needs step 1 (Optuna's log scale has no step)")
        return Param(key, IntDistribution(value.start, choices[-1], log=log, step=1 if log else value.step))
    # choice(...), a,b,c lists and other ranges: categorical. Optuna stores only primitive choices, so a list
    # or dict choice is stored as its override text.
    stored = [c if isinstance(c, _PRIMITIVE) else Transformer.str(c) for c in choices]
    return Param(key, CategoricalDistribution(stored),
                 texts={s: Transformer.str(c) for s, c in zip(stored, choices, strict=True)})
