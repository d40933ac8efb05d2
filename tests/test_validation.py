"""Every config mistake is one clear error before anything runs: exit code 2, one message, no run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converge.app.validation import validate
from converge.cli import INTERNAL_ERROR, main
from converge.registry import providers_by_option
from converge.testing import compose

DIGITS = "experiment=vision/digits"


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "line"), [
    ([DIGITS, "seed=banana"], "seed=banana: Input should be a valid integer"),  # int
    ([DIGITS, "seed=-5"], "seed=-5: Input should be greater than or equal to 0"),  # numpy's seeds
    ([DIGITS, "trainer.max_epochs=0"], "trainer.max_epochs=0: 0 would train nothing"),
    ([DIGITS, "data.val_fraction=1.5"], "data.val_fraction=1.5: Input should be less than 1"),  # a plugin's range
    ([DIGITS, "model.label_smoothing=abc"], "model.label_smoothing=abc: Input should be a valid number"),  # float
    ([DIGITS, "monitor.metric=[1]"], "monitor.metric=[1]: Input should be a valid string"),  # str
    ([DIGITS, "test_after_fit=maybe"], "test_after_fit=maybe: Input should be a valid boolean"),  # bool
    ([DIGITS, "monitor.mode=foo"], "monitor.mode=foo: Input should be 'min' or 'max'"),  # Literal
    ([DIGITS, "scheduler.interval=hour"], "scheduler.interval=hour: Input should be 'step' or 'epoch'"),
    ([DIGITS, "data.batch_size=0"], "data.batch_size=0: Input should be greater than 0"),  # range
    ([DIGITS, "trainer.devices=0"], "trainer.devices=0: devices is a count >= 1"),  # hardware
    ([DIGITS, "trainer.precision=17"], "trainer.precision=17: Input should be"),  # a Literal of Lightning's
    ([DIGITS, "model.net.widths=[3,a]"], "model.net.widths[1]=a: Input should be a valid integer"),  # list
    (["data=vision/image_folder", "model=vision/cnn"],
     "data.source.root: required by data=vision/image_folder: set data.source.root=VALUE"),  # required
    (["data=vision/image_folder", "model=vision/cnn", "data.source.root=[1]"],
     "data.source.root=[1]: Input should be a valid string"),  # a path
    ([DIGITS, "+monitor.metirc=val/acc"], "monitor takes no 'metirc'. Did you mean: metric?"),  # unknown: core node
    ([DIGITS, "+model.net.widht=3"], "takes no 'widht'. Did you mean: widths?"),  # unknown: a target's
    ([DIGITS, "+data.batch_sise=3"], "Did you mean: batch_size"),  # a DataModule's **loader, followed up the MRO
    ([DIGITS, "trainer.max_epoch=3"], "Did you mean: trainer.max_epochs"),  # unknown: Hydra's composition
    ([DIGITS, "optim.lr=-1"], "optim.lr=-1: torch.optim.AdamW refused it: Invalid learning rate: -1"),
    ([DIGITS, "scheduler=plateau", "scheduler.schedule.factor=2"], "scheduler.schedule.factor=2: "
     "torch.optim.lr_scheduler.ReduceLROnPlateau refused it: Factor should be < 1.0."),
    ([DIGITS, "data.source._target_=converge_vision.sources.Digitz"], "cannot import"),
    (["data=vision/digits", "model=vision/cnn", "monitor.metric=val/foo"],  # a converge resolver's refusal
     "monitor.metric=val/foo: converge cannot tell from its name whether higher is better"),
    ([DIGITS, "monitor.metric=val/acc", "monitor.mode=min"],  # the task's metric: torchmetrics' higher_is_better
     "monitor.metric=val/acc is better higher, but monitor.mode=min would keep its worst epoch"),
])
def test_each_kind_of_mistake_is_one_message_naming_the_key(args, line, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, ["train", *args])
    assert code == 2, err
    assert line in err
    assert err.count("converge: error:") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob(".hydra")), "no run directory is left"


def test_a_monitored_metric_the_run_does_not_log_is_refused_after_its_first_validation(tabular: dict,
                                                                                      tmp_path: Path) -> None:
    """Only the logs can tell (a plugin's task logs what it likes): one message naming what is logged, exit 2,
    and the run's directory removed (no checkpoint was written yet)."""
    from converge.testing import run_cli

    done = run_cli(["train", *tabular["overrides"], "debug=smoke", "~callbacks.progress_bar",
                    "monitor.metric=val/mean_squared_error", "monitor.mode=min", f"hydra.run.dir={tmp_path / 'run'}"],
                   env=tabular["env"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "unknown monitor.metric 'val/mean_squared_error'" in done.stderr and "val/mse" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
    # a validation metric is awaited until validation runs, which may not be every epoch
    done = run_cli(["train", *tabular["overrides"], "debug=smoke", "~callbacks.progress_bar", "trainer.max_epochs=2",
                    "trainer.check_val_every_n_epoch=2", f"hydra.run.dir={tmp_path / 'run'}"], env=tabular["env"])
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_mistake_is_reported_at_once(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, ["train", DIGITS, "seed=banana", "data.batch_size=0", "+model.hiden=8"])
    assert code == 2
    assert "(3 problems; nothing was started)" in err
    assert all(key in err for key in ("seed=banana", "data.batch_size=0", "model.hiden=8"))


@pytest.mark.parametrize(("args", "line"), [
    (["eval", "ckpt_path=x.ckpt", "split=train"], "split=train: Input should be 'test' or 'val'"),
    (["eval", "split=val"], "ckpt_path: required by converge eval: set ckpt_path=VALUE"),
    (["export", "ckpt_path=x.ckpt", "export.formats=[onnx,foo]"], "export.formats[1]=foo: Input should be"),
    (["export", "ckpt_path=x.ckpt", "export.tolerance.fp32.atol=-1"], "greater than or equal to 0"),
    (["export", "ckpt_path=x.ckpt", "+export.dirr=x"], "Did you mean: dir?"),
])
def test_eval_and_export_keys_are_checked(args, line, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, args)
    assert code == 2 and line in err, err
    assert not list(tmp_path.rglob(".hydra"))


@pytest.mark.parametrize("experiment", providers_by_option()["experiment"])
def test_every_shipped_experiment_is_valid(experiment: str, tmp_path: Path) -> None:
    validate(compose([f"experiment={experiment}"], output_dir=tmp_path), "train")


@pytest.mark.parametrize("override", [f"{group}={option}" for group in ("optim", "scheduler", "hardware", "logger",
                                                                         "callbacks", "debug")
                                      for option in providers_by_option()[group]])
def test_every_shipped_option_is_valid(override: str, tmp_path: Path) -> None:
    validate(compose([DIGITS, override], output_dir=tmp_path), "train")


def test_an_internal_error_is_a_traceback_exit_1_and_a_bug_line(capsys, tmp_path, monkeypatch) -> None:
    def broken(cfg):
        raise RuntimeError("a bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("converge.app.train.train", broken)
    code, err = _run(capsys, ["train", DIGITS])
    assert code == 1
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.rstrip().endswith(INTERNAL_ERROR)


def test_hydra_state_is_restored(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = list(sys.argv)
    _run(capsys, ["train", DIGITS, "seed=banana"])
    assert sys.argv == argv
    assert "HYDRA_FULL_ERROR" not in __import__("os").environ


def test_train_help_lists_groups_and_keys_without_an_experiment_or_torch() -> None:
    probe = ("import sys; from converge.cli import main; code = main(['train', '--help']); "
             "heavy = [m for m in ('torch', 'lightning', 'hydra') if m in sys.modules]; "
             "assert code == 0 and not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "vision/digits" in done.stdout and "[adamw]" in done.stdout
    assert "seed=42" in done.stdout and "monitor.keep=best" in done.stdout


def test_the_data_spec_reaches_the_task_as_it_is_not_through_omegaconf() -> None:
    """A spec holds every user and item id of a data set: merged into the model's config by Hydra, ml-100k's took
    40 s to build a task (0.05 s handed over as it is)."""
    from converge.app.build import build_task
    from converge.testing import build_datamodule

    cfg = compose(["data=vision/digits", "model=vision/cnn", "debug=smoke"])
    spec = build_datamodule(cfg.data, cfg.seed).spec()
    task = build_task(cfg, spec)
    assert all(task.hparams["spec"][key] is value for key, value in spec.items() if isinstance(value, list))
