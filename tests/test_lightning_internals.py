"""Lightning's and Hydra's private internals: converge keeps four, each in one module (the DDP launcher, the step
Lightning logs an epoch at, Hydra's command-line parser, Lightning's scripting switch) and pinned here; where
public API replaced one, what Lightning does is pinned too."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning_doubles import Recorder, Regression, ScriptedScore
from torch.utils.data import DataLoader, TensorDataset

from converge.diagnostics.convergence import fit_outcome
from converge.diagnostics.dashboards import _logging_step
from converge.training.distributed import _ConfigLauncher, start_ranks_from_config

ROOT = Path(__file__).resolve().parents[1]
# The modules that keep a private internal (pinned below), and the one each may use.
ISOLATED = {ROOT / "src/converge/training/distributed.py": "_SubprocessScriptLauncher",
            ROOT / "src/converge/diagnostics/dashboards.py": "_batches_that_stepped",
            ROOT / "src/converge/cli.py": "hydra._internal.utils import get_args_parser",
            ROOT / "src/converge/exporting/formats.py": "_jit_is_scripting"}
PRIVATE = re.compile(
    r"from (lightning|hydra)\S* import .*\b_[a-zA-Z]|\b(lightning|hydra)(\.\w+)*\._[a-z]\w*"  # private names, modules
    r"|\._jit_is_scripting\b"
    r"|\.(_logger_connector|_batches_that_stepped|_return_value|_last_checkpoint_saved|_last_global_step_saved"
    r"|_every_n_train_steps|_train_time_interval|_should_save_on_train_epoch_end|_trainer)\b"  # private attributes
    r"|\b(trainer|fit_loop|epoch_loop)\._[a-z]")


def test_no_private_lightning_or_hydra_internal_but_the_isolated_ones() -> None:
    sources = [*ROOT.glob("src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in sources
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if PRIVATE.search(re.sub(r" as \w+", "", line)) and ISOLATED.get(path, "\n") not in line]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("strategy", ["ddp", "auto"])  # fsdp: the same launcher, on GPUs only
def test_the_ddp_launcher_relies_on_what_lightning_still_provides(strategy: str) -> None:
    """converge.training.distributed replaces Lightning's _SubprocessScriptLauncher (ranks > 0 must not re-run
    Hydra, tests/test_ddp.py) in every strategy that would start ranks by re-running the command (`auto` on
    several devices picks DDP): a Lightning upgrade that changes what it overrides or uses fails here first."""
    trainer = pl.Trainer(accelerator="cpu", devices=3, strategy=strategy, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    assert type(trainer.strategy.launcher) is _SubprocessScriptLauncher  # what Lightning still builds
    start_ranks_from_config(trainer.strategy, {"seed": 1})
    launcher = trainer.strategy.launcher
    assert type(launcher) is _ConfigLauncher and launcher.run_config == {"seed": 1}
    assert list(inspect.signature(_SubprocessScriptLauncher.__init__).parameters) == [
        "self", "cluster_environment", "num_processes", "num_nodes"]
    assert "self._call_children_scripts()" in inspect.getsource(_SubprocessScriptLauncher.launch)  # still called
    assert callable(_SubprocessScriptLauncher._check_can_spawn_children)
    assert launcher.procs == [] and (launcher.num_processes, launcher.num_nodes) == (3, 1)
    world = launcher.cluster_environment
    assert world.main_address and world.main_port and (world.node_rank(), world.local_rank()) == (0, 0)


class PerStepLogging(Regression):
    """Lightning decides the logged steps itself: self.log on every step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, target = self.split_batch(batch)
        loss = self.compute_loss(self(*inputs), target)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(target))
        return loss


class LoggingSteps(pl.Callback):
    """The step Dashboards draws at after each validation; Lightning's logs hold the step it logged the scores at."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps.append(_logging_step(trainer))


def _fit(task_class: type[Regression]) -> tuple[Recorder, LoggingSteps]:
    torch.manual_seed(0)
    task = task_class()
    data = TensorDataset(torch.randn(150, 3), torch.randn(150))  # 10 batches an epoch
    recorder, steps = Recorder(), LoggingSteps()
    # gradient accumulation and a stop in the middle of an epoch (max_steps): Lightning's own logging rule's corners
    trainer = pl.Trainer(max_epochs=3, max_steps=11, accumulate_grad_batches=2, log_every_n_steps=3, logger=recorder,
                         callbacks=[steps], accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, DataLoader(data, batch_size=16), DataLoader(data, batch_size=64))
    return recorder, steps


def test_train_loss_and_pictures_are_logged_at_the_steps_lightning_logs_at() -> None:
    """TaskModule decides the train/loss_step steps from public attributes (Lightning's rule is private), and
    Dashboards draws at Lightning's private step of the epoch's logs: both must match what Lightning does."""
    ours, steps = _fit(Regression)
    lightnings, _ = _fit(PerStepLogging)

    def curve(recorder: Recorder) -> list[tuple[int, float]]:
        return [(step, round(row["train/loss_step"], 6)) for step, row in recorder.rows if "train/loss_step" in row]

    assert curve(ours) == curve(lightnings) and len(curve(ours)) >= 3
    validated = [step for step, row in ours.rows if "val/mse" in row]
    assert steps.steps == validated and len(validated) == 2, (steps.steps, validated)


def test_early_stopping_in_the_first_epoch_is_reported_as_early_stopping() -> None:
    """EarlyStopping.stopping_reason, not stopped_epoch > 0: a stop in epoch 0 is an early stop too."""
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=8)
    stopper = EarlyStopping(monitor="val/score", mode="max", stopping_threshold=0.5)
    trainer = pl.Trainer(max_epochs=3, callbacks=[stopper], accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ScriptedScore([1.0, 1.0, 1.0]), data, data)
    assert trainer.current_epoch == 1 and stopper.stopped_epoch == 0
    assert fit_outcome(trainer)["stop_reason"] == "early_stopping"


def test_hydras_argument_parser_and_lightnings_scripting_switch_are_still_there() -> None:
    """converge.cli splits Hydra's flags from overrides with the parser hydra.main uses; converge.exporting sets
    LightningModule._jit_is_scripting so that tracing a task does not touch its `trainer` property."""
    from hydra._internal.utils import get_args_parser

    parsed = get_args_parser().parse_args(["--cfg", "job", "-m", "optim.lr=1e-3", "model=vision/cnn"])
    assert parsed.overrides == ["optim.lr=1e-3", "model=vision/cnn"] and parsed.cfg == "job" and parsed.multirun
    assert pl.LightningModule._jit_is_scripting is False
    assert "_jit_is_scripting" in inspect.getsource(pl.LightningModule.trainer.fget)
