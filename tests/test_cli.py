"""The command line: fast answers, Hydra's flags, and one clear message per user error."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from converge.testing import run_cli


def test_help_and_plugins_answer_without_importing_torch() -> None:
    probe = ("import sys; from converge.cli import main; main(['--help']); main(['plugins']); "
             "heavy = [m for m in ('torch', 'lightning', 'hydra') if m in sys.modules]; "
             "assert not heavy, heavy")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: converge" in done.stdout and "vision" in done.stdout
    assert time.perf_counter() - started < 5  # generous: the benchmark holds the < 1 s target


def test_cfg_job_prints_the_composed_config_with_overrides() -> None:
    done = run_cli(["train", "experiment=recsys/ml100k", "optim.lr=0.003", "trainer.max_epochs=7",
                    "+trainer.gradient_clip_val=1.0", "~callbacks.early_stopping", "--cfg", "job"])
    assert done.returncode == 0, done.stderr
    assert "lr: 0.003" in done.stdout and "max_epochs: 7" in done.stdout
    assert "gradient_clip_val: 1.0" in done.stdout
    assert "early_stopping" not in done.stdout and "model_checkpoint" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["trian"], "unknown command 'trian'.\nDid you mean: train?"),
    (["train", "experiment=vision/digit"], "Did you mean: vision/digits"),
    (["train", "experiment=vision/digits", "model=vision/resnet"], "Did you mean: vision/resnet18"),
    (["train", "experiment=vision/digits", "hardware=ddp_gpu"], "unknown hardware config 'ddp_gpu'"),
    (["train", "-m", "experiment=vision/digits", "optim=adamw,sgdd"], "unknown optim config 'sgdd'"),
    (["train", "experiment=vision/digits", "optim.lrr=1"], "optim has no key 'lrr'.\nDid you mean: optim.lr?"),
    (["train", "data=vision/digits"], "You must specify 'model'"),
    (["data", "fetch", "mnist"], "Did you mean: mnist5k?"),
    (["train", "experiment=vision/digits", "plugins.extra=[no_such_module]"], "cannot import 'no_such_module'"),
])
def test_user_errors_are_one_message_and_exit_code_2(args: list[str], message: str, tmp_path) -> None:
    done = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"] if args[0] == "train" else args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_gpu_asked_for_on_a_cpu_machine(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_cli(["train", "experiment=vision/digits", "hardware=gpu", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2
    assert "asks for 1 GPU(s)" in done.stderr and "hardware=cpu" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists(), "a failed run must not leave its directory behind"
