"""The study on disk: one SQLite file per search folder, resumed by running the same command again.

A search folder holds `study.db` (every trial, its params, per-epoch values and state), `best.yaml` (the
best trial and the command that reproduces it) and one run directory per trial, each with a `trial.json`
that says how it ended (COMPLETE, PRUNED, FAIL).
"""

from __future__ import annotations

import fcntl
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from converge.errors import ConfigError
from converge.layout import SEARCH_SUMMARY, TRIAL_RECORD, write_json, write_text
from converge.search.space import SearchSpace

log = logging.getLogger("converge")

# Trials that count toward n_trials: a failed or killed trial is run again by the next resume.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
IDENTITY_KEY = "converge"  # study user attribute: what the study searches, to refuse resuming another search
RETRY_KEY = "retry_of"     # trial user attribute: the killed trial whose params this one runs again
RUN_DIR_KEY = "run_dir"    # trial user attribute, set by the pruning callback when the trial starts
_MODES = {"minimize": "min", "maximize": "max"}  # study direction -> monitor.mode


@contextmanager
def exclusive(sweep_dir: Path) -> Iterator[None]:
    """One search per study at a time. The OS releases the lock when its process dies, even by SIGKILL,
    so every RUNNING trial found under the lock belongs to a search that is gone."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "study.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another search is running the study in {sweep_dir}: wait for it to end, or "
                              "start another study with hydra.sweeper.study_name=NAME") from None
        yield


def open_study(storage: str, name: str, direction: str, identity: Mapping[str, Any],
               sampler_config: Mapping[str, Any] | None, pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    """Create the study, or load it and fail its interrupted trials (their params run again next)."""
    from hydra.utils import instantiate

    existing = _trial_count(storage, name)
    sampler = None
    if sampler_config:
        # A resumed seeded sampler must not replay the random start of the first session: offset its seed.
        seed = sampler_config.get("seed")
        sampler = instantiate(sampler_config, **({"seed": seed + existing} if seed is not None else {}))
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    _check_same_search(study, name, direction, dict(identity))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("trial %d was interrupted: marked failed; its params run again", trial.number)
        write_trial(trial.user_attrs.get(RUN_DIR_KEY), study.trials[trial.number], reason="interrupted")
        if RETRY_KEY not in trial.user_attrs:  # a trial that kills its search twice is not run a third time
            study.enqueue_trial(trial.params, user_attrs={RETRY_KEY: trial.number})
    return study


def _trial_count(storage: str, name: str) -> int:
    rdb = optuna.storages.RDBStorage(storage)
    try:
        return len(rdb.get_all_trials(rdb.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        return 0


def _check_same_search(study: optuna.Study, name: str, direction: str, identity: dict[str, Any]) -> None:
    stored = study.user_attrs.get(IDENTITY_KEY)
    if stored is None:
        study.set_user_attr(IDENTITY_KEY, identity)
        return
    changed = [key for key in identity if stored.get(key) != identity[key]]
    if study.direction.name.lower() != direction:
        changed.append("direction")
    if changed:
        details = "; ".join(f"{key}: was {stored.get(key)!r}, now {identity.get(key, direction)!r}"
                            for key in changed)
        raise ConfigError(f"study '{name}' was started with another search ({details}). Rerun the original "
                          "command to resume it, or start a new study with hydra.sweeper.study_name=NAME")


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def write_trial(run_dir: str | Path | None, trial: FrozenTrial, reason: str | None = None) -> None:
    """trial.json in the trial's run directory: how it ended, so a pruned run is never read as finished.

    A failed run removes its own directory (see run_dir.discard_if_untrained); it is not recreated for this.
    """
    if run_dir is None or (trial.state != TrialState.PRUNED and not Path(run_dir).is_dir()):
        return
    write_json(Path(run_dir) / TRIAL_RECORD, {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "intermediate_values": trial.intermediate_values,
        "reason": reason,
    })


def write_best(sweep_dir: Path, study: optuna.Study, metric: str | None, space: SearchSpace) -> dict[str, Any]:
    """best.yaml: the best trial, its params, its run directory and the overrides that train it again."""
    by_state = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    summary: dict[str, Any] = {"study": study.study_name, "direction": study.direction.name.lower(),
                               "metric": metric, "trials": by_state, "best": None}
    if complete:
        best = study.best_trial
        # hparams_search=... would make `converge train` (without -m) a search again: leave it out
        command = [o for o in space.fixed if not o.startswith("hparams_search=")]
        # ...and with it the monitor the space set, which picks the checkpoint and the score: keep the trials' own
        monitor = {"monitor.metric": metric, "monitor.mode": _MODES[study.direction.name.lower()]}
        command += [f"{key}={value}" for key, value in monitor.items()
                    if value is not None and not any(o.startswith(f"{key}=") for o in command)]
        command += [space.params[key].override(value) for key, value in best.params.items() if key in space.params]
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get(RUN_DIR_KEY), "overrides": command}
    write_text(sweep_dir / SEARCH_SUMMARY, yaml.safe_dump(summary, sort_keys=False))
    return summary
