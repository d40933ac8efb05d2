"""The convergence callback: the rule on known histories, and real digits runs driven into each state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from converge.diagnostics.rule import STATES, Thresholds, classify, epoch_diagnostics

LIMITS = Thresholds(window=3, tolerance=0.01, overfit_epochs=3, underfit_skill=0.05, diverge_fraction=0.5)


def history(train: list[float], val: list[float], monitor: list[float] | None = None) -> list[dict]:
    monitor = val if monitor is None else monitor
    return [{"epoch": e, "train_loss": t, "val_loss": v, "monitor": m}
            for e, (t, v, m) in enumerate(zip(train, val, monitor, strict=True))]


# -- the rule ------------------------------------------------------------------------------------
def test_too_little_history_is_improving() -> None:
    assert classify(history([2.0, 2.0], [2.0, 2.0]), "min", 2.3, LIMITS) == "improving"


def test_steady_gains_are_improving_and_a_plateau_is_converged() -> None:
    falling = [2.0, 1.5, 1.1, 0.8, 0.6, 0.45]
    assert classify(history(falling, falling), "min", 2.3, LIMITS) == "improving"
    flat = [2.0, 1.0, 0.5, 0.5, 0.5, 0.499]
    assert classify(history(flat, flat), "min", 2.3, LIMITS) == "converged"


def test_a_plateau_no_better_than_the_baseline_is_underfitting() -> None:
    stuck = [2.31, 2.30, 2.30, 2.30, 2.30, 2.30]
    assert classify(history(stuck, stuck), "min", 2.32, LIMITS) == "underfitting"
    assert classify(history(stuck, stuck), "min", None, LIMITS) == "converged", "no baseline: nothing to compare"
    accuracy = [0.10, 0.11, 0.11, 0.11, 0.11, 0.11]  # a metric to maximise: the ideal is 1
    assert classify(history(stuck, stuck, accuracy), "max", 0.10, LIMITS) == "underfitting"
    assert classify(history(stuck, stuck, [0.9] * 6), "max", 0.10, LIMITS) == "converged"


def test_validation_worsening_while_training_improves_is_overfitting() -> None:
    train = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    val = [1.0, 0.6, 0.5, 0.55, 0.62, 0.7]
    assert classify(history(train, val), "min", 2.3, LIMITS) == "overfitting"
    assert classify(history([1.0, 0.5, 0.3, 0.3, 0.3, 0.3], val), "min", 2.3, LIMITS) != "overfitting", \
        "training that stopped improving is not overfitting"
    assert classify(history(train, [1.0, 0.6, 0.5, 0.7, 0.8, 0.75]), "min", 2.3, LIMITS) == "overfitting", \
        "a dip that stays far above the best is still overfitting"
    assert classify(history(train, [1.0, 0.6, 0.5, 0.55, 0.502, 0.7]), "min", 2.3, LIMITS) != "overfitting", \
        "an epoch back within tolerance of the best is not"


def test_non_finite_or_growing_loss_is_diverging() -> None:
    assert classify(history([2.0, math.nan], [2.0, 2.0]), "min", None, LIMITS) == "diverging"
    assert classify(history([2.0, 1.0], [2.0, math.inf]), "min", None, LIMITS) == "diverging"
    assert classify(history([2.0, 1.0, 1.6], [2.0, 1.0, 1.6]), "min", None, LIMITS) == "diverging"
    assert classify(history([2.0, 1.0, 1.2], [2.0, 1.0, 1.2]), "min", None, LIMITS) != "diverging"


def test_diagnostics_of_an_epoch() -> None:
    records = history([1.0, 0.8, 0.6, 0.5], [1.1, 0.9, 0.75, 0.8])
    measured = epoch_diagnostics(records, "min", LIMITS)
    assert measured["gap"] == pytest.approx(0.3)
    assert measured["gap_trend"] == pytest.approx(0.1)  # gaps 0.1, 0.15, 0.3 over the last 3 epochs
    assert measured["best_epoch"] == 2 and measured["epochs_since_best"] == 1
    assert measured["rel_improvement"] == pytest.approx((1.1 - 0.75) / 1.1)


# -- real runs -----------------------------------------------------------------------------------
DIGITS = ["experiment=vision/digits", "~callbacks.progress_bar", "~callbacks.model_summary",
          "data.train_transforms=[]", "+trainer.num_sanity_val_steps=0", "callbacks.convergence.window=3"]


def train_digits(overrides: list[str], run_dir: Path) -> dict:
    """Train in this process (as `converge train` would) and read back what the run wrote."""
    from converge.app.train import train
    from converge.testing import compose

    train(compose([*DIGITS, *overrides], output_dir=run_dir))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    states = ([STATES[int(e.value)] for e in events.Scalars("convergence/state")]
              if "convergence/state" in events.Tags()["scalars"] else [])
    return {"metrics": json.loads((run_dir / "metrics.json").read_text()),
            "history": json.loads((run_dir / "convergence.json").read_text()), "states": states, "events": events}


def test_a_normal_run_improves_and_logs_its_diagnostics(tmp_path: Path) -> None:
    run = train_digits(["trainer.max_epochs=3", "+trainer.limit_train_batches=4", "test_after_fit=false"], tmp_path)
    assert run["states"] == ["improving"] * 3
    scalars = set(run["events"].Tags()["scalars"])
    assert {f"convergence/{name}" for name in ("gap", "gap_trend", "epochs_since_best", "grad_norm",
                                               "update_ratio", "state")} <= scalars
    assert all(e.value > 0 for e in run["events"].Scalars("convergence/grad_norm"))
    assert all(0 < e.value < 1 for e in run["events"].Scalars("convergence/update_ratio"))
    outcome = run["metrics"]["convergence"]
    assert outcome["state"] == "improving" and outcome["stop_reason"] == "max_epochs"
    # the majority-class baseline, fitted on the training targets: one class in ten on digits
    assert 0.05 < outcome["baseline"]["val/acc"] < 0.15 and outcome["baseline"]["val/loss"] > 2.0


def test_a_model_memorising_one_batch_is_overfitting(tmp_path: Path) -> None:
    # 5% of the training split (72 images, one batch, no augmentation) is memorised within a few epochs.
    run = train_digits(["data.val_fraction=0.95", "data.batch_size=72", "+data.eval_batch_size=512",
                        "+trainer.limit_val_batches=1", "model.label_smoothing=0", "scheduler=none",
                        "trainer.max_epochs=12", "test_after_fit=false"], tmp_path)
    assert run["states"][-1] == "overfitting", run["states"]
    last = run["history"]["epochs"][-1]
    assert last["epochs_since_best"] >= 3 and last["gap_trend"] > 0 and last["train_loss"] < 0.1


def test_a_learning_rate_of_zero_plateaus_at_the_baseline(tmp_path: Path) -> None:
    run = train_digits(["optim.lr=0", "+trainer.limit_train_batches=2", "trainer.max_epochs=4",
                        "test_after_fit=false"], tmp_path)
    assert run["states"] == ["improving"] * 3 + ["underfitting"], "a plateau needs window (3) + 1 epochs"
    assert run["metrics"]["convergence"]["state"] == "underfitting"


def test_divergence_stops_at_once_and_keeps_the_finite_checkpoints(tmp_path: Path) -> None:
    # A sane first epoch (lr 0.01), then a step schedule multiplies the lr by 1e6: the loss becomes non-finite.
    run = train_digits(["optim=sgd", "optim.lr=0.01", "scheduler=step", "scheduler.schedule.step_size=1",
                        "scheduler.schedule.gamma=1e6", "+trainer.limit_train_batches=3", "trainer.max_epochs=4"],
                       tmp_path)
    outcome = run["metrics"]["convergence"]
    assert outcome["state"] == "diverging" and outcome["stop_reason"] == "diverged"
    assert outcome["diverged"]["epoch"] == 1 and outcome["diverged"]["step"] <= 6, "stopped within the epoch"
    assert run["metrics"]["epochs_trained"] == 1
    for name in ("last.ckpt", Path(run["metrics"]["kept"]["checkpoint"]).name):
        checkpoint = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert checkpoint["epoch"] == 0, name
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()), name
    assert math.isfinite(run["metrics"]["test"]["test/loss"]), "the finite best checkpoint was tested"


def test_a_non_finite_train_loss_stops_at_that_step(tmp_path: Path) -> None:
    run = train_digits(["optim=sgd", "optim.lr=1e4", "+trainer.limit_train_batches=20", "trainer.max_epochs=3"],
                       tmp_path)
    outcome = run["metrics"]["convergence"]
    assert outcome["state"] == "diverging" and "train loss is nan" in outcome["diverged"]["reason"]
    assert outcome["diverged"]["epoch"] == 0 and outcome["diverged"]["step"] < 20, "stopped before the epoch ended"
    assert not list((tmp_path / "checkpoints").glob("*.ckpt")), "no epoch finished: nothing to checkpoint"
    assert run["metrics"]["test"] == {}, "non-finite weights are never tested"
    assert "diverged" in (tmp_path / "report.md").read_text()


def test_thresholds_that_cannot_work_are_a_clear_error() -> None:
    from converge.errors import ConfigError

    with pytest.raises(ConfigError, match="window"):
        Thresholds(window=0)


def test_the_callback_does_not_change_training(tmp_path: Path) -> None:
    """It only observes: the same seeded run with and without it ends on identical weights."""
    from converge.app.train import train
    from converge.testing import compose

    weights = []
    for name, extra in (("with", []), ("without", ["~callbacks.convergence"])):
        train(compose([*DIGITS, *extra, "trainer.max_epochs=2", "+trainer.limit_train_batches=3",
                       "trainer.deterministic=true", "test_after_fit=false"], output_dir=tmp_path / name))
        weights.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
