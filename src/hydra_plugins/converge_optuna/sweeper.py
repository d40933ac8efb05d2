"""The Sweeper: open (or resume) the study, run the missing trials through Hydra's launcher, write best.yaml."""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from converge.layout import SEARCH_SUMMARY

if TYPE_CHECKING:  # optuna is imported when a search runs, not when Hydra scans its plugins
    import optuna

    from converge.search.space import SearchSpace

log = logging.getLogger("converge")

_DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}


class OptunaSweeper(Sweeper):
    def __init__(self, study_name: str, storage: str, direction: str | None, metric: str | None, n_trials: int,
                 n_jobs: int, sampler: DictConfig | None, pruner: DictConfig | None, params: DictConfig) -> None:
        self.study_name, self.storage, self.direction, self.metric = study_name, storage, direction, metric
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner = sampler, pruner
        self.params = OmegaConf.to_container(params) if params is not None else {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from converge.errors import run_reporting_errors

        return run_reporting_errors(lambda: self._sweep(arguments))

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from hydra.utils import instantiate

        from converge.errors import ConfigError

        try:
            from converge.search.space import search_space
            from converge.search.study import counted, exclusive, open_study, write_best
        except ModuleNotFoundError as error:
            raise ConfigError(f"hparams_search needs optuna ({error}): pip install optuna") from None

        assert self.config is not None
        direction = _DIRECTIONS.get(str(self.direction))
        if direction is None:
            raise ConfigError(f"a search needs its direction before the first trial: set monitor.mode=min|max "
                              f"(and monitor.metric), got {self.direction!r}")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
        space = search_space(self.params, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        identity = {"metric": self.metric, "overrides": sorted(space.fixed), "space": space.describe()}
        returns: list[Sequence[JobReturn]] = []
        with exclusive(sweep_dir):
            study = open_study(self.storage, self.study_name, direction, identity, self.sampler,
                               instantiate(self.pruner) if self.pruner else None)
            missing = self.n_trials - counted(study)
            log.info("study '%s' in %s: %d of %d trials done", self.study_name, sweep_dir,
                     self.n_trials - missing, self.n_trials)
            # One launch per missing trial, so the search ends even when trials fail (they run again next time).
            while missing > 0:
                size = min(self.n_jobs, missing)
                returns.append(self._run_batch(study, space, size))
                missing -= size
            summary = write_best(sweep_dir, study, self.metric, space)
        if summary["best"] is None:
            log.warning("no trial of study '%s' completed: see %s", self.study_name, sweep_dir / SEARCH_SUMMARY)
        else:
            log.info("best trial %d: %s = %s with %s\nretrain it: converge train %s\n(all in %s)",
                     summary["best"]["number"], self.metric, summary["best"]["value"], summary["best"]["params"],
                     " ".join(summary["best"]["overrides"]), sweep_dir / SEARCH_SUMMARY)
        return returns

    def _run_batch(self, study: optuna.Study, space: SearchSpace, size: int) -> Sequence[JobReturn]:
        from optuna.trial import TrialState

        distributions = {key: param.distribution for key, param in space.params.items()}
        trials = [study.ask(distributions) for _ in range(size)]
        # The launcher numbers jobs from initial_job_idx on: the trial number is the job number (and the
        # run's subdirectory), which is how the pruning callback inside the job finds its trial.
        assert [t.number for t in trials] == list(range(trials[0].number, trials[0].number + size))
        batch = [[*space.fixed, *(space.params[key].override(value) for key, value in t.params.items())]
                 for t in trials]
        told: set[int] = set()
        try:
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            failure = None
            for trial, result in zip(trials, results, strict=True):
                failure = self._tell(study, trial, result) or failure
                told.add(trial.number)
        finally:  # interrupted (Ctrl-C, a user error inside a job): no trial of this batch stays RUNNING
            for trial in trials:
                if trial.number not in told:
                    study.tell(trial, state=TrialState.FAIL)
        if failure is not None:
            _ = failure.return_value  # re-raise the job's error the way Hydra's own sweeper does
        return results

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> JobReturn | None:
        """Record how a job ended; return it when it failed with an error (the search stops on it)."""
        import optuna
        from optuna.trial import TrialState

        from converge.search.study import RUN_DIR_KEY, write_trial

        run_dir = result.hydra_cfg.hydra.runtime.output_dir if result.hydra_cfg is not None else None
        if run_dir is not None:
            trial.set_user_attr(RUN_DIR_KEY, run_dir)
        value, reason = _outcome(result), None
        pruned = isinstance(value, optuna.TrialPruned)
        if result.status == JobStatus.COMPLETED and isinstance(value, (int, float)) and math.isfinite(value):
            frozen = study.tell(trial, float(value))
        elif pruned:
            frozen, reason = study.tell(trial, state=TrialState.PRUNED), str(value)
            log.info("trial %d %s", trial.number, reason)
        else:
            reason = (f"{type(value).__name__}: {value}" if result.status == JobStatus.FAILED
                      else f"no finite monitored score (got {value!r})")
            frozen = study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
        write_trial(run_dir, frozen, reason)
        return result if result.status == JobStatus.FAILED and not pruned else None


def _outcome(result: JobReturn) -> object:
    """A completed job's return value, or a failed job's exception: the public JobReturn.return_value raises it,
    after a line on stderr that Hydra writes for a sweep it ends; a pruned trial ends nothing, so it is dropped."""
    if result.status == JobStatus.COMPLETED:
        return result.return_value
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return result.return_value
    except Exception as error:  # what Hydra's run_job stored: it catches Exception
        return error
