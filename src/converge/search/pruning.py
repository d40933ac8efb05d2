"""The Lightning callback that reports a trial's monitored metric to its study and stops it when pruned.

It runs inside the training job and talks to the trial the sweeper asked for through the study's SQLite
storage, which is why the sweeper uses Optuna directly (hydra-optuna-sweeper only sees a job's return value).
"""

from __future__ import annotations

import lightning.pytorch as pl
import optuna

from converge.errors import ConfigError
from converge.search.study import RUN_DIR_KEY


class OptunaPruning(pl.Callback):
    """Report `monitor` to trial `trial` after every validation epoch; stop the run when Optuna prunes it.

    A pruned run finishes its epoch (so its checkpoints are saved), then leaves fit with `optuna.TrialPruned`:
    no test, no metrics.json, so the run directory never looks like a finished run, and the sweeper records
    the trial as PRUNED. Only global rank 0 talks to the storage; it broadcasts the decision to the others.
    """

    def __init__(self, storage: str, study_name: str, trial: int | None, monitor: str, run_dir: str,
                 pruner: optuna.pruners.BasePruner | None = None) -> None:
        if trial is None:  # hydra.job.num is only set under -m
            raise ConfigError("an hparams_search config runs a search: add -m (converge train -m ...)")
        self.storage, self.study_name, self.trial_number = storage, study_name, trial
        self.monitor, self.run_dir = monitor, run_dir
        self.pruner = pruner or optuna.pruners.NopPruner()
        self._trial: optuna.Trial | None = None
        self.pruned: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        storage = optuna.storages.RDBStorage(self.storage)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.trial_number)
        except KeyError:
            raise ConfigError(f"no trial {self.trial_number} in study '{self.study_name}' ({self.storage}): "
                              "the pruning callback reports to a trial of the sweeper's study only") from None
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        self._trial = optuna.Trial(study, trial_id)
        self._trial.set_user_attr(RUN_DIR_KEY, self.run_dir)  # lets a resumed search find a killed trial's run

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        decision = None
        if self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise ConfigError(f"the search monitors '{self.monitor}', which the task does not log; logged: "
                                  f"{', '.join(sorted(trainer.callback_metrics))}")
            epoch = trainer.current_epoch
            self._trial.report(float(value), step=epoch)
            if self._trial.should_prune():
                decision = f"pruned at epoch {epoch}: {self.monitor}={float(value):.6g}"
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision:
            self.pruned = decision
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned:
            raise optuna.TrialPruned(self.pruned)

