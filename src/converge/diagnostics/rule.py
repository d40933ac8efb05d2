"""The convergence state of a run, from its per-epoch history (plain Python: the report reuses it).

A run is in exactly one state after each epoch. The rule, checked in this order:

1. ``diverging``: the train or validation loss is non-finite, or the train loss has grown back by more
   than ``diverge_fraction`` of the progress it had made: ``loss - best > diverge_fraction *
   max(first - best, |best|)`` (the ``|best|`` term keeps a run that never improved from counting noise
   as growth).
2. ``overfitting``: for ``overfit_epochs`` epochs (N) validation has been worse while training improved:
   the monitored validation score of each of the last N epochs is worse than the best before them by
   more than ``tolerance`` (relative), while the train loss fell by more than ``tolerance`` over the
   same N epochs.
3. a plateau: at least ``window`` epochs (W) of history, and the best monitored score improved by less
   than ``tolerance`` (relative) over the last W epochs. Then
   - ``underfitting`` when the train loss plateaued too (its best improved by less than ``tolerance``
     over W epochs) and the run is poor against the task's baseline (the trivial predictor it declares,
     e.g. the majority class): its skill, ``(score - baseline) / (ideal - baseline)`` with ideal 0 for a
     metric to minimise and 1 for one to maximise (the ideal of every bounded score such as accuracy,
     F1 or NDCG), is below ``underfit_skill``;
   - ``converged`` otherwise (including when the task declares no baseline).
4. ``improving``: anything else, including the first W epochs, when there is too little history to
   call a plateau.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from converge.errors import ConfigError

STATES = ("improving", "converged", "overfitting", "underfitting", "diverging")
"""State names; a state's index is the numeric code logged as convergence/state."""


@dataclass(frozen=True)
class Thresholds:
    """The knobs of the rule (the callback's config; see the module docstring)."""

    window: int = 5
    tolerance: float = 0.01
    overfit_epochs: int = 3
    underfit_skill: float = 0.05
    diverge_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1 or self.overfit_epochs < 1:
            raise ConfigError("callbacks.convergence: window and overfit_epochs must be at least 1 epoch")
        if self.tolerance < 0 or self.diverge_fraction <= 0:
            raise ConfigError("callbacks.convergence: tolerance must be >= 0 and diverge_fraction > 0")


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def relative_improvement(values: Sequence[float | None], window: int) -> float | None:
    """How much the best value (lower is better) improved over the last `window` epochs, relative to the
    best before them: 0.02 means 2% better. None before `window` + 1 values exist."""
    if len(values) <= window:
        return None
    before = [v for v in values[:-window] if finite(v)]
    now = [v for v in values if finite(v)]
    if not before:
        return None
    reference = min(before)
    return (reference - min(now)) / max(abs(reference), 1e-12)


def slope(values: Sequence[float | None]) -> float | None:
    """The least-squares slope per epoch of the finite values (None with fewer than 2)."""
    points = [(x, y) for x, y in enumerate(values) if finite(y)]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def skill(score: float, baseline: float, mode: str) -> float:
    """The fraction of the way from the baseline to a perfect score (0: no better than the baseline)."""
    ideal = 0.0 if mode == "min" else 1.0
    if ideal == baseline:
        return 0.0
    return (score - baseline) / (ideal - baseline)


def _diverging(train: Sequence[float | None], val: Sequence[float | None], fraction: float) -> bool:
    if not (finite(train[-1]) or train[-1] is None) or not (finite(val[-1]) or val[-1] is None):
        return True
    losses = [v for v in train if finite(v)]
    if len(losses) < 2:
        return False
    best = min(losses)
    return losses[-1] - best > fraction * max(losses[0] - best, abs(best))


def _overfitting(scores: Sequence[float | None], train: Sequence[float | None], limits: Thresholds) -> bool:
    n = limits.overfit_epochs
    if len(scores) <= n or not all(finite(v) for v in (scores[-1], scores[-1 - n], train[-1], train[-1 - n])):
        return False
    best = min(v for v in scores if finite(v))
    recent_best = min((v for v in scores[-n:] if finite(v)), default=math.inf)
    worse = recent_best - best > limits.tolerance * abs(best)  # every one of the last N epochs
    train_improved = train[-1] < train[-1 - n] - limits.tolerance * abs(train[-1 - n])
    return worse and train_improved


def classify(history: Sequence[Mapping[str, Any]], mode: str, baseline: float | None,
             limits: Thresholds) -> str:
    """The state after the last epoch of `history` (records with `monitor`, `train_loss`, `val_loss`)."""
    sign = 1.0 if mode == "min" else -1.0  # scores below: lower is better
    scores = [sign * r["monitor"] if finite(r.get("monitor")) else r.get("monitor") for r in history]
    train = [r.get("train_loss") for r in history]
    val = [r.get("val_loss") for r in history]
    if _diverging(train, val, limits.diverge_fraction):
        return "diverging"
    if _overfitting(scores, train, limits):
        return "overfitting"
    improvement = relative_improvement(scores, limits.window)
    if improvement is None or improvement >= limits.tolerance:
        return "improving"
    train_improvement = relative_improvement(train, limits.window)
    best = min(v for v in scores if finite(v))
    poor = baseline is not None and skill(sign * best, baseline, mode) < limits.underfit_skill
    if poor and train_improvement is not None and train_improvement < limits.tolerance:
        return "underfitting"
    return "converged"


def epoch_diagnostics(history: Sequence[Mapping[str, Any]], mode: str, limits: Thresholds) -> dict[str, Any]:
    """What the callback logs under convergence/ after the last epoch of `history` (None: not defined yet)."""
    sign = 1.0 if mode == "min" else -1.0
    scores = [sign * r["monitor"] if finite(r.get("monitor")) else None for r in history]
    gaps = [r["val_loss"] - r["train_loss"] if finite(r.get("val_loss")) and finite(r.get("train_loss")) else None
            for r in history]
    ranked = [(v, epoch) for epoch, v in enumerate(scores) if v is not None]
    best_index = min(ranked)[1] if ranked else None
    return {
        "rel_improvement": relative_improvement(scores, limits.window),
        "gap": gaps[-1],
        "gap_trend": slope(gaps[-limits.window:]),
        "best_epoch": history[best_index]["epoch"] if best_index is not None else None,
        "epochs_since_best": len(history) - 1 - best_index if best_index is not None else None,
    }
