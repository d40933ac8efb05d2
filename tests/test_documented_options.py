"""Every documented config option works: each option of every config group runs a few real training steps
(alone, on top of a working run), or is run by the test named for it in COVERED_ELSEWHERE; hardware this
machine lacks is one clear error. A new option without a run fails `test_every_option_is_run_somewhere`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from converge import ConvergeError, HardwareError
from converge.registry import providers_by_option
from converge.testing import compose

SMOKE = ["debug=smoke", "~callbacks.progress_bar"]

# Options run here on the README's tabular plugin (a small MLP on a CSV: seconds a run).
CORE_GROUPS = ("optim", "scheduler", "callbacks", "logger", "debug", "hardware", "paths")
NEEDS_A_GPU = {"gpu", "ddp", "fsdp"}
# Options that a run of their own elsewhere covers (each test trains with the option named).
COVERED_ELSEWHERE = {
    ("logger", "mlflow"): "tests/test_loggers.py",
    ("logger", "wandb"): "tests/test_loggers.py",
    ("hardware", "ddp_cpu"): "tests/test_ddp.py",
    ("hardware", "multinode"): "tests/test_launchers.py (torchrun, -m slow); here: refused outside torchrun",
    ("data", "vision/digits"): "plugins/vision/tests/test_vision.py::TestDigitsCNN",
    ("data", "vision/image_folder"): "plugins/vision/tests/test_vision.py::test_image_folder_trains_through_the_cli",
    ("data", "text/r8"): "plugins/text/tests/test_text_conformance.py",
    ("data", "text/csv"): "plugins/text/tests/test_text_data.py",
    ("data", "recsys/ml100k"): "plugins/recsys/tests/test_recsys_plugin.py::TestRatingMF",
    ("data", "recsys/ml100k_ranking"): "plugins/recsys/tests/test_recsys_plugin.py::TestRankingFeatures",
    ("data", "recsys/csv"): "plugins/recsys/tests/test_recsys_plugin.py",
    ("model", "vision/cnn"): "plugins/vision/tests/test_vision.py::TestDigitsCNN",
    ("model", "vision/resnet18"): "plugins/vision/tests/test_vision.py::TestDigitsResNet",
    ("model", "text/fasttext"): "plugins/text/tests/test_text_conformance.py::TestFastText",
    ("model", "text/cnn"): "plugins/text/tests/test_text_conformance.py::TestKimCNN",
    ("model", "text/transformer"): "plugins/text/tests/test_text_conformance.py::TestTransformer",
    ("model", "text/minilm"): "plugins/text/tests/test_text_conformance.py::TestPretrainedEncoder (a tiny BERT)",
    ("experiment", "text/rotten_tomatoes_minilm"): "plugins/text/tests/test_text_minilm.py (-m slow: the real MiniLM)",
    ("experiment", "text/rotten_tomatoes_minilm_frozen"): "plugins/text/tests/test_text_minilm.py (-m slow)",
    ("experiment", "text/r8_fewshot_minilm"): "plugins/text/tests/test_text_minilm.py (-m slow)",
    ("model", "recsys/mf"): "plugins/recsys/tests/test_recsys_plugin.py::TestRatingMF",
    ("model", "recsys/feature_mf"): "plugins/recsys/tests/test_recsys_plugin.py::TestRankingFeatures",
    ("experiment", "vision/digits"): "tests/test_resume.py, plugins/vision/tests",
    ("experiment", "text/r8"): "plugins/text/tests/test_text_conformance.py::TestFastTextExperiment",
    ("hparams_search", "vision/digits"): "tests/test_search.py",
    ("hparams_search", "optuna"): "tests/test_search.py",
    ("hydra", "default"): "every run",
    ("finetune", "full"): "every run (the default)",
    ("finetune", "frozen"): "tests/test_finetune.py",
    ("finetune", "gradual"): "tests/test_finetune.py",
    ("finetune", "llrd"): "tests/test_finetune.py",
    ("finetune", "lora"): "tests/test_finetune.py",
    ("hydra", "launcher/submitit_local"): "tests/test_launchers.py (-m slow)",
    ("hydra", "launcher/submitit_slurm"): "tests/test_launchers.py (its resource checks)",
    # The README's third-party plugin, listed once a test has put it on sys.path: every core option above runs on it.
    ("data", "tabular/csv"): "test_core_option_runs, tests/test_write_a_plugin.py",
    ("model", "tabular/mlp"): "test_core_option_runs, tests/test_write_a_plugin.py",
}
# Plugin options without a run elsewhere: a smoke run on a slice of their data.
SLICES = {
    ("data", "vision/mnist5k"): ["model=vision/cnn", "model.net.widths=[8]"],
    ("data", "text/r52"): ["model=text/fasttext", "data.tokenizer.bigram_buckets=500"],  # a slice loses classes
    ("data", "text/20ng"): ["model=text/fasttext", "data.max_docs=200", "data.tokenizer.bigram_buckets=500"],
    ("data", "text/rotten_tomatoes"): ["model=text/fasttext", "data.max_docs=200",
                                       "data.tokenizer.bigram_buckets=500"],
    ("model", "vision/torchvision"): ["data=vision/digits", "model.net.name=mobilenet_v3_small", "data.batch_size=16"],
    ("model", "recsys/ncf"): ["data=recsys/ml100k", "data.max_users=40"],
    ("experiment", "vision/mnist5k"): ["model.net.widths=[8]"],
    ("data", "vision/mnist8x8"): ["model=vision/cnn", "model.net.widths=[8]"],
    ("experiment", "vision/digits_few"): [],
    ("experiment", "text/20ng"): ["data.max_docs=200", "data.tokenizer.bigram_buckets=500"],
    ("experiment", "text/rotten_tomatoes"): ["data.max_docs=200", "data.tokenizer.bigram_buckets=500"],
    ("experiment", "recsys/ml100k"): ["data.max_users=40"],
    ("experiment", "recsys/ml100k_ranking"): ["data.max_users=40"],
    ("hparams_search", "text/r8"): None,  # a search space: composed with its experiment, searched in test_search
    ("hparams_search", "recsys/ml100k"): None,
}


@pytest.fixture(scope="module")
def tabular_plugin(tabular: dict) -> list[str]:
    """The README's plugin importable in this process (its entry point found on sys.path)."""
    sys.path.insert(0, str(tabular["site"]))
    yield tabular["overrides"]
    sys.path.remove(str(tabular["site"]))


def _train(overrides: list[str], run_dir: Path) -> dict:
    from converge.app.train import train

    torch.set_num_threads(torch.get_num_threads())  # hardware.threads changes it: leave the process as found
    train(compose(overrides, output_dir=run_dir))
    return json.loads((run_dir / "metrics.json").read_text())


def _options(groups: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(group, option) for group, options in providers_by_option().items() if group in groups
            for option in sorted(options)]


@pytest.mark.parametrize(("group", "option"), _options(CORE_GROUPS), ids=lambda value: str(value))
def test_core_option_runs(group: str, option: str, tabular_plugin: list[str], tmp_path: Path) -> None:
    if (group, option) in COVERED_ELSEWHERE:
        pytest.skip(f"run by {COVERED_ELSEWHERE[group, option]}")
    overrides = [*tabular_plugin, *SMOKE, f"{group}={option}"]
    if group == "debug":
        overrides = [*tabular_plugin, f"debug={option}", "~callbacks.progress_bar", "trainer.max_epochs=2"]
    if group == "callbacks":  # a group without the progress bar to remove
        overrides = [*tabular_plugin, "debug=smoke", f"callbacks={option}"]
    if group == "hardware" and (option in NEEDS_A_GPU or option == "multinode") and not torch.cuda.is_available():
        with pytest.raises(HardwareError, match="hardware=ddp_cpu"):
            _train(overrides, tmp_path / "run")
        assert not (tmp_path / "run").exists()
        return
    metrics = _train(overrides, tmp_path / "run")
    if option != "fdr":  # fast_dev_run: one batch of everything, no checkpoint to test
        assert metrics["test"]["test/mse"] >= 0 and metrics["kept"]["checkpoint"]


@pytest.mark.parametrize(("group", "option"), [key for key, extra in SLICES.items() if extra is not None],
                         ids=lambda value: str(value))
def test_plugin_option_runs_on_a_slice(group: str, option: str, tmp_path: Path) -> None:
    metrics = _train([f"{group}={option}", *SLICES[group, option], *SMOKE, "trainer.max_epochs=1"],
                     tmp_path / "run")
    assert metrics["test"] and metrics["kept"]["checkpoint"]


def test_transfer_from_mnist_runs_on_the_pretraining_run(tmp_path: Path) -> None:
    """experiment=vision/digits_from_mnist starts from the network the newest vision-mnist8x8 run kept."""
    root = [*SMOKE, "trainer.max_epochs=1"]  # compose() puts output_root above each run: the pretraining run is found
    _train(["experiment=vision/mnist8x8", *root], tmp_path / "vision-mnist8x8" / "runs" / "first")
    metrics = _train(["experiment=vision/digits_from_mnist", *root], tmp_path / "transfer")
    assert metrics["test"] and metrics["kept"]["checkpoint"]


def test_search_spaces_compose_with_their_experiment() -> None:
    for group, option in [key for key, extra in SLICES.items() if extra is None]:
        experiment = option  # each plugin's space is for its experiment of the same name
        config = compose([f"experiment={experiment}", f"{group}={option}"])
        assert config.monitor.metric and config.task_name


def test_every_option_is_run_somewhere() -> None:
    everything = set(_options(tuple(providers_by_option())))
    here = set(_options(CORE_GROUPS)) | set(SLICES) | {("experiment", "vision/mnist8x8"),
                                                        ("experiment", "vision/digits_from_mnist")}
    assert everything <= here | set(COVERED_ELSEWHERE), sorted(everything - here - set(COVERED_ELSEWHERE))


def test_multinode_outside_torchrun_is_one_clear_error() -> None:
    from converge.app.build import check_hardware

    with pytest.raises(ConvergeError, match="torchrun or SLURM"):
        check_hardware(compose(["experiment=vision/digits", "hardware=multinode"]).trainer)
