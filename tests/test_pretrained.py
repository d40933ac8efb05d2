"""Pretrained weights from config: where a source is, what it holds, what of it loads into which part."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from converge.app.build import build_datamodule, build_task
from converge.app.transfer import prepare_transfer
from converge.errors import CheckpointError, ConfigError
from converge.sources import locate
from converge.testing import compose
from converge.training.pretrained import load_pretrained, load_state, read_weights

DIGITS = ["data=vision/digits", "model=vision/cnn", "model.net.widths=[8,16]"]


def _task(tmp_path: Path, *overrides: str):
    cfg = compose([*DIGITS, *overrides], output_dir=tmp_path / "run")
    return cfg, build_task(cfg, build_datamodule(cfg.data).spec())


@pytest.fixture(scope="module")
def source_task(tmp_path_factory: pytest.TempPathFactory):
    """A digits CNN whose weights are all 0.5: easy to tell from any initialisation."""
    _, task = _task(tmp_path_factory.mktemp("source"))
    with torch.no_grad():
        for tensor in task.state_dict().values():
            tensor.fill_(0.5) if tensor.is_floating_point() else None
    return task


def _install_distribution(site: Path, name: str, files: dict[str, bytes]) -> None:
    """A real installed distribution (dist-info with its RECORD), as pip leaves one, in `site`."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    for relative, content in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_bytes(content)
    (info / "RECORD").write_text("".join(f"{relative},,\n" for relative in [*files, f"{info.name}/METADATA"]))


def test_locate_finds_the_weights_an_installed_distribution_ships(tmp_path: Path, monkeypatch, source_task) -> None:
    site = tmp_path / "site"
    save_file(source_task.net.state_dict(), tmp_path / "model.safetensors")
    _install_distribution(site, "tiny-weights", {"tiny_weights/__init__.py": b"",
                                                 "tiny_weights/model/model.safetensors":
                                                     (tmp_path / "model.safetensors").read_bytes(),
                                                 "tiny_weights/model/tokenizer.json": b"{}"})
    monkeypatch.syspath_prepend(str(site))
    assert locate("package:tiny-weights") == site / "tiny_weights" / "model"
    assert locate("package:tiny-weights/tiny_weights/model/tokenizer.json").read_text() == "{}"
    state, is_checkpoint = read_weights("package:tiny-weights")
    assert not is_checkpoint and set(state) == set(source_task.net.state_dict())
    with pytest.raises(ConfigError, match="no installed distribution 'not-installed'"):
        locate("package:not-installed")
    with pytest.raises(ConfigError, match="has no nothing.json"):
        locate("package:tiny-weights/nothing.json")


def test_every_file_kind_reads_as_the_same_tensors(tmp_path: Path, source_task) -> None:
    weights = source_task.net.state_dict()
    (tmp_path / "hf").mkdir()
    torch.save(weights, tmp_path / "hf" / "pytorch_model.bin")
    save_file(weights, tmp_path / "net.safetensors")
    torch.save(weights, tmp_path / "net.pt")
    torch.save({"state_dict": source_task.state_dict(), "converge": {"task": "x"}}, tmp_path / "task.ckpt")
    for source in ("hf", "net.safetensors", "net.pt"):
        state, is_checkpoint = read_weights(str(tmp_path / source))
        assert not is_checkpoint and all(torch.equal(state[key], weights[key]) for key in weights), source
    state, is_checkpoint = read_weights(str(tmp_path / "task.ckpt"))
    assert is_checkpoint and set(state) == set(source_task.state_dict())


def test_a_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    torch.save({"net.weight": torch.zeros(1), "trap": Path("x")}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_weights(str(tmp_path / "unsafe.pt"))


def test_strict_refuses_a_mismatch_and_lists_every_key(caplog) -> None:
    target = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    state = {"0.weight": torch.ones(3, 4), "0.bias": torch.ones(3), "1.weight": torch.ones(5, 3),
             "extra.weight": torch.ones(1)}
    with pytest.raises(ConfigError) as refused:
        load_state(target, state, strict=True)
    message = str(refused.value)
    assert "missing" in message and "1.bias" in message
    assert "unexpected" in message and "extra.weight" in message
    assert "shape mismatch" in message and "1.weight" in message and "[5, 3] in the source vs [2, 3]" in message
    assert "pretrained.strict=false" in message
    assert torch.count_nonzero(target[0].bias == 1) == 0, "a refused load changed the weights"

    with caplog.at_level(logging.INFO, logger="converge"):
        report = load_state(target, state, strict=False)
    assert report.loaded == ["0.bias", "0.weight"] and set(report.mismatched) == {"1.weight"}
    assert torch.equal(target[0].weight, torch.ones(3, 4)) and not torch.equal(target[1].weight, torch.ones(2, 3))
    assert "shape mismatch" in caplog.text and "1.weight" in caplog.text  # the table is logged


def test_nothing_that_fits_is_an_error_even_when_not_strict() -> None:
    with pytest.raises(ConfigError, match="no key fits"):
        load_state(nn.Linear(2, 2), {"encoder.weight": torch.ones(2, 2)}, strict=False)


def test_prefix_takes_one_part_of_a_source() -> None:
    target = nn.Linear(2, 2)
    load_state(target, {"encoder.weight": torch.ones(2, 2), "encoder.bias": torch.ones(2), "head.w": torch.ones(1)},
               prefix="encoder.")
    assert torch.equal(target.bias, torch.ones(2))


def test_a_converge_checkpoint_seeds_the_backbone_of_a_task_with_another_head(tmp_path: Path, source_task) -> None:
    torch.save({"state_dict": source_task.state_dict(), "converge": {"task": "x"}}, tmp_path / "source.ckpt")
    _, task = _task(tmp_path, "model.net.dropout=0.5")
    task.net.head[3] = nn.Linear(16, 4)  # another head: 4 classes
    report = load_pretrained(task, str(tmp_path / "source.ckpt"))  # into the backbone, under its own path "net."
    assert report.clean and all(torch.all(t == 0.5) for t in task.net.features.state_dict().values()
                                if t.is_floating_point())
    assert not torch.all(task.net.head[3].weight == 0.5)
    with pytest.raises(ConfigError, match=r"net\.head\.3\.weight"):
        load_pretrained(task, str(tmp_path / "source.ckpt"), into="task")
    load_pretrained(task, str(tmp_path / "source.ckpt"), into="task", strict=False)
    assert torch.all(task.mean == 0.5) and task.net.head[3].weight.shape == (4, 16)


def test_the_recipe_loads_pretrained_weights_but_not_when_resuming(tmp_path: Path, source_task) -> None:
    save_file(source_task.net.features.state_dict(), tmp_path / "features.safetensors")
    cfg, task = _task(tmp_path, f"pretrained.source={tmp_path / 'features.safetensors'}")
    assert prepare_transfer(cfg, task) == []  # finetune=full: no strategy
    assert torch.all(task.net.features[0].weight == 0.5)

    missing = tmp_path / "gone.safetensors"
    cfg, task = _task(tmp_path, f"pretrained.source={missing}")
    with pytest.raises(ConfigError, match="pretrained source not found"):
        prepare_transfer(cfg, task)
    cfg, task = _task(tmp_path, f"pretrained.source={missing}", f"ckpt_path={tmp_path / 'features.safetensors'}")
    prepare_transfer(cfg, task)  # resuming: the checkpoint's weights, the source is not read
    assert not torch.all(task.net.features[0].weight == 0.5)


def test_run_source_names_the_newest_kept_checkpoint_of_a_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained.source=run:never-trained"):
        read_weights("run:never-trained", tmp_path)


def test_a_task_without_backbone_says_so() -> None:
    class Plain(nn.Module):
        def backbone(self):
            return None

    with pytest.raises(ConfigError, match="pretrained.into=task"):
        load_pretrained(Plain(), "unused")
