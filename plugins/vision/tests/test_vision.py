"""The vision plugin: conformance, its data sources and networks, on real digits."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converge import DataError, UnknownNameError
from converge.testing import PluginConformance, cli, compose, run_cli
from converge_vision.models import SmallCNN, resnet18_small, torchvision_classifier
from converge_vision.sources import Digits, ImageFolder


def write_digits(folder: Path, count: int = 3) -> list[str]:
    """Real digits (the first images of the data set) as 8x8 grey PNGs, and one as .npy."""
    images = Digits().load().images[:count, 0].numpy()
    paths = []
    for index, pixels in enumerate(images):
        path = folder / f"digit{index}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(str(path))
    np.save(folder / "digit.npy", images[0])
    return [*paths, str(folder / "digit.npy")]


def digit_instances(folder: Path) -> list[tuple[dict, list[str]]]:
    """The digits of `write_digits` as `converge serve` instances: base64 PNGs, and pixels for the .npy."""
    *pngs, npy = write_digits(folder)
    images = [({"image": base64.b64encode(Path(png).read_bytes()).decode()}, [png]) for png in pngs]
    return [*images, ({"pixels": np.load(npy).tolist()}, [npy])]


class TestDigitsCNN(PluginConformance):
    overrides = ["data=vision/digits", "model=vision/cnn"]

    def predict_inputs(self, folder: Path) -> list[str]:
        return write_digits(folder)

    def serve_instances(self, folder: Path) -> list[tuple[dict, list[str]]]:
        return digit_instances(folder)


class TestDigitsResNet(PluginConformance):
    overrides = ["data=vision/digits", "model=vision/resnet18", "data.batch_size=16"]


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    from converge_vision.data import ImageClassificationData

    data = ImageClassificationData(source=Digits())
    splits = data._split()
    sizes = {name: len(indices) for name, (_, indices) in splits.items()}
    assert sizes == {"train": 1293, "val": 144, "test": 360}  # sklearn-sized 80/20, then 10% val
    everything = np.concatenate([indices for _, indices in splits.values()])
    assert len(np.unique(everything)) == 1797
    test_labels = splits["test"][0].labels[splits["test"][1]]
    assert np.bincount(test_labels).min() >= 35  # every digit is in the test split, in proportion
    spec = data.spec()
    assert spec["num_classes"] == 10 and spec["channels"] == 1 and spec["image_size"] == [8, 8]


@pytest.mark.parametrize("make", [lambda: SmallCNN(1, 10), lambda: SmallCNN(1, 10, upsample=2),
                                  lambda: resnet18_small(1, 10),
                                  lambda: torchvision_classifier("mobilenet_v3_small", 1, 10)])
def test_networks_map_images_to_logits(make) -> None:
    net = make().eval()
    assert net(torch.rand(3, 1, 32, 32)).shape == (3, 10)


def test_unknown_torchvision_model_suggests_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: resnet18"):
        torchvision_classifier("resnet-18", 3, 10)


def _image_tree(root: Path, classes: int = 3, per_class: int = 12, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 80 + label * 60).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_image_folder_trains_through_the_cli(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "images")
    run_dir = tmp_path / "run"
    done = run_cli(["train", "data=vision/image_folder", "model=vision/cnn", f"data.source.root={root}",
                    "data.source.image_size=[16,16]", "data.num_workers=0", "debug=smoke",
                    f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val/acc" and "test/acc" in metrics["test"]


def test_image_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        ImageFolder(str(tmp_path / "missing")).load()
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        ImageFolder(str(tmp_path / "empty")).load()
    broken = _image_tree(tmp_path / "broken", classes=2, per_class=2)
    (broken / "class_0" / "0.png").write_bytes(b"not a png")
    images = ImageFolder(str(broken), image_size=(8, 8)).load()
    with pytest.raises(DataError, match="0.png: cannot read this image"):
        images.load(0)


def test_missing_image_folder_is_one_clear_error_and_no_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli(["train", "data=vision/image_folder", "model=vision/cnn",
                    f"data.source.root={tmp_path / 'nowhere'}", f"hydra.run.dir={run_dir}"])
    assert done.returncode == 2
    assert "image folder not found" in done.stderr and "Traceback" not in done.stderr
    assert not run_dir.exists()


def test_mnist5k_is_fetched_verified_and_split(tmp_path: Path) -> None:
    from converge_vision.data import ImageClassificationData
    from converge_vision.sources import Mnist5k

    data = ImageClassificationData(source=Mnist5k())
    sizes = {name: len(indices) for name, (_, indices) in data._split().items()}
    assert sizes == {"train": 3600, "val": 400, "test": 1000}
    assert data.spec()["image_size"] == [28, 28]


def test_experiments_compose() -> None:
    for name in ("digits", "mnist5k"):
        cfg = compose([f"experiment=vision/{name}"], output_dir="/tmp/unused")
        assert cfg.task_name == f"vision-{name}"
        assert cfg.data.train_transforms, "the experiments augment their training images"


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke-trained digits CNN exported to ONNX through the CLI."""
    root = tmp_path_factory.mktemp("bundle")
    done = run_cli(["train", "data=vision/digits", "model=vision/cnn", "debug=smoke", "task_name=digits",
                    "~callbacks.progress_bar"], cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli(["export", "task_name=digits", "ckpt_path=last", f"export.dir={root / 'bundle'}"], cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "bundle"


def test_predict_answers_bad_inputs_with_one_error_naming_the_file(onnx_bundle: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(tmp_path / "big.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "colour.png")
    (tmp_path / "text.png").write_text("not an image")
    cases = {"big.png": "image is 10x10 with 1 channel(s), the model takes 8x8 with 1 channel(s)",
             "colour.png": "image mode RGB, the model takes L", "text.png": "cannot read this image",
             "missing.png": "no such file"}
    for name, message in cases.items():
        code = cli(["predict", str(onnx_bundle), str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2 and f"{tmp_path / name}: {message}" in err and "Traceback" not in err, err


def test_tampered_or_unknown_bundles_are_refused(onnx_bundle: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    inputs = write_digits(tmp_path)
    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_bundle, tampered)
    with open(tampered / "model.onnx", "ab") as model:
        model.write(b"\0")
    assert cli(["predict", str(tampered), *inputs]) == 2
    assert "model.onnx: sha256 does not match the manifest" in capsys.readouterr().err
    future = tmp_path / "future"
    shutil.copytree(onnx_bundle, future)
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    assert cli(["predict", str(future), *inputs]) == 2
    assert "bundle format version 99 is not supported" in capsys.readouterr().err
    assert cli(["predict", str(onnx_bundle), *inputs, "--format", "int8"]) == 2
    assert "no 'int8' model in this bundle" in capsys.readouterr().err


def test_predictions_match_the_labels_of_real_digits(onnx_bundle: Path, tmp_path: Path) -> None:
    done = run_cli(["predict", str(onnx_bundle), *write_digits(tmp_path, count=3)])
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 4 and all(0 <= a["probability"] <= 1 and len(a["top"]) == 3 for a in answers)
    assert answers[0]["label"] == answers[3]["label"], "the same digit as PNG and as .npy"


def test_failed_verification_writes_no_bundle(onnx_bundle: Path, tmp_path: Path) -> None:
    source = json.loads((onnx_bundle / "manifest.json").read_text())["source_checkpoint"]["path"]
    done = run_cli(["export", f"ckpt_path={source}", f"export.dir={tmp_path / 'bundle'}",
                    "export.tolerance.fp32.atol=0", "export.tolerance.fp32.rtol=0",
                    f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "export verification failed, no bundle written" in done.stderr and "onnx: max abs difference" in done.stderr
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".bundle*"))


def test_bench_reports_latency_and_throughput_against_eager(onnx_bundle: Path) -> None:
    done = run_cli(["bench", str(onnx_bundle), "--json", "--repeats", "20", "--batch-size", "32", "--threads", "1"])
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["threads"] == 1 and report["batch_size"] == 32
    table = report["formats"]
    assert set(table) == {"onnx", "eager"}
    for row in table.values():
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["rows_per_s"] > 0


@pytest.mark.parametrize("flag", ["--threads", "--batch-size", "--repeats"])
def test_bench_refuses_a_count_below_one(onnx_bundle: Path, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bench", str(onnx_bundle), flag, "0"]) == 2
    assert f"{flag}: must be at least 1, got 0" in capsys.readouterr().err
