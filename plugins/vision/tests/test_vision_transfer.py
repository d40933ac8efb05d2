"""Vision transfer learning: torchvision's named weights offline, few labels, MNIST at the size of digits, which
batches a frozen backbone's feature cache keeps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from converge import DataError, UnknownNameError
from converge_vision.data import ImageClassificationData
from converge_vision.models import torchvision_classifier
from converge_vision.sources import Digits, Resized
from converge_vision.task import ImageClassifier


def test_named_weights_offline_say_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CONVERGE_OFFLINE", "1")  # never a download in tests, with or without a network
    with pytest.raises(DataError) as refused:
        torchvision_classifier("mobilenet_v3_small", 3, 10, weights="DEFAULT")
    expected = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert f"put the file at {expected}" in str(refused.value)
    with pytest.raises(UnknownNameError, match="Did you mean: IMAGENET1K_V1"):
        torchvision_classifier("mobilenet_v3_small", 3, 10, weights="IMAGENET1K_V")


def test_named_weights_load_from_the_file_the_message_names(tmp_path: Path, monkeypatch) -> None:
    from torchvision.models import mobilenet_v3_small

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CONVERGE_OFFLINE", "1")
    downloaded = mobilenet_v3_small(weights=None)  # stands for the file a download would have left
    path = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    path.parent.mkdir(parents=True)
    torch.save(downloaded.state_dict(), path)
    net = torchvision_classifier("mobilenet_v3_small", 1, 7, weights="DEFAULT")
    assert torch.equal(net.body.features[0][0].weight, downloaded.features[0][0].weight)
    assert net.head.out_features == 7 and net.head.in_features == downloaded.classifier[-1].in_features
    grey = torch.rand(2, 1, 32, 32)
    assert torch.allclose(net.adapter(grey), grey.expand(-1, 3, -1, -1))  # grey copied into R, G and B
    assert net.eval()(grey).shape == (2, 7)


def test_label_fraction_keeps_a_stratified_part_of_training_only() -> None:
    full = ImageClassificationData(source=Digits())._split()
    few = ImageClassificationData(source=Digits(), label_fraction=0.1)._split()
    assert len(few["train"][1]) == 130 and set(few["train"][1]) < set(full["train"][1])
    assert all((few[name][1] == full[name][1]).all() for name in ("val", "test"))
    labels = few["train"][0].labels[few["train"][1]]
    assert set(labels) == set(range(10))


def test_resized_mnist_has_the_size_of_digits(tmp_path: Path) -> None:
    images = Resized(Digits(), size=(4, 4), border=2).load()
    assert images.images.shape[1:] == (1, 4, 4) and images.images.dtype == torch.uint8
    assert torch.equal(images.images[0, 0], Digits().load().images[0, 0, 2:6, 2:6])  # 4x4 centre, unchanged


def test_a_frozen_backbone_caches_evaluation_images_and_training_images_unless_augmented(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CONVERGE_DATA_DIR", str(tmp_path))
    shifts = {"train_transforms": [{"_target_": "torchvision.transforms.v2.RandomAffine", "degrees": 0,
                                    "translate": [0.125, 0.125]}]}
    images = torch.rand(4, 1, 8, 8)
    for data, training_rows in ((None, 4), (shifts, 0)):
        task = ImageClassifier(net={"_target_": "converge_vision.models.SmallCNN", "widths": [8]},
                               spec={"channels": 1, "num_classes": 10, "mean": [0.5], "std": [0.25]},
                               optim={"_target_": "torch.optim.SGD", "_partial_": True}, data=data)
        task.backbone().requires_grad_(False)
        with caplog.at_level(logging.INFO, logger="converge"):
            task.train()(images)
            cached = task.net.cached.cache
            assert (len(cached.rows) if cached else 0) == training_rows
            task.eval()(images)
            assert len(task.net.cached.cache.rows) == 4
    assert "for validation and test batches only (the training inputs are augmented" in caplog.text


def test_grey_images_reach_a_frozen_torchvision_backbone_unchanged_so_its_cache_stops_growing() -> None:
    """Two epochs of a frozen backbone under a head that trains: the backbone reads the same 3-channel images
    each epoch (grey repeated into R, G and B, no weights), so the cache keeps each image once. A learned
    adapter in front gave the validation images new bytes, and the file new rows, every epoch."""
    net = torchvision_classifier("resnet18", 1, 10)
    net.backbone().requires_grad_(False)
    optimiser = torch.optim.SGD([parameter for parameter in net.parameters() if parameter.requires_grad], lr=0.5)
    images, labels = torch.rand(4, 1, 8, 8), torch.arange(4)
    for _ in range(2):  # an epoch: a training step, then validation
        torch.nn.functional.cross_entropy(net.train()(images), labels).backward()
        optimiser.step()
        optimiser.zero_grad()
        with torch.no_grad():
            net.eval()(images)
    assert len(net.cached.cache.rows) == 4
