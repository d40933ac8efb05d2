"""converge's Optuna sweeper: `hydra/sweeper=converge_optuna`, selected by every `hparams_search` config.

Why our own sweeper and not Hydra's `hydra-optuna-sweeper` (1.3.0, the latest on PyPI): it requires
optuna<3 (2.10, from 2021) while pip gives optuna 5.0; it only sees each job's return value, so a trial
cannot report per-epoch values and be pruned; and it neither keeps its study in a fixed place nor fails the
trial a killed search left RUNNING, so it cannot resume. This one asks Optuna for trials (ask and tell),
launches them through Hydra's launcher, and keeps the study in SQLite in a folder named after the study;
the pruning callback inside each job reports to the same trial through that file.

Hydra imports every module in this namespace to find plugins: nothing here imports optuna or torch until a
search actually runs. No `from __future__ import annotations` either: Hydra loads these modules outside
sys.modules, where dataclasses cannot resolve string annotations (and OmegaConf needs the real types).
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.converge_optuna.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler itself (its seed depends on the study)
    study_name: str = "search"  # the folder and the SQLite study: the same name resumes, another starts anew
    storage: str = "sqlite:///${hydra.sweep.dir}/study.db"
    direction: str | None = None  # min | max (hparams_search/optuna sets it from monitor.mode)
    metric: str | None = None   # the monitored metric, recorded with the study
    n_trials: int = 20            # trials that complete or are pruned; failed ones run again on resume
    n_jobs: int = 1               # trials launched together (in parallel with a parallel hydra/launcher)
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 42})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner",
                                                 "n_startup_trials": 3, "n_warmup_steps": 1})
    params: dict[str, str] = field(default_factory=dict)  # key -> Hydra sweep syntax, e.g. interval(0.0, 0.5)


ConfigStore.instance().store(group="hydra/sweeper", name="converge_optuna", node=OptunaSweeperConf,
                             provider="converge")
