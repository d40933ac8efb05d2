"""`converge export`: a checkpoint becomes a verified bundle, or nothing at all."""

from __future__ import annotations

import json
import logging
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from converge import registry
from converge.app.build import build_datamodule, load_task, plain
from converge.app.logs import configure_console
from converge.app.run_dir import discard_if_untrained
from converge.checksums import file_record, sha256_of
from converge.errors import ConfigError, ExportError
from converge.exporting import formats
from converge.exporting.verification import compare_outputs, failures, task_metrics
from converge.layout import atomic_folder, write_json
from converge.plugin import resolve
from converge.runtime import drift
from converge.runtime.bundle import EXAMPLES, FORMAT_FILES, FORMAT_VERSION, MANIFEST
from converge.runtime.drift import DRIFT_FILE
from converge.training.checkpoint_io import resolve_checkpoint

log = logging.getLogger("converge")


def export(cfg: DictConfig) -> Path:
    try:
        return _export(cfg)
    except BaseException:
        discard_if_untrained(Path(cfg.paths.output_dir))
        raise


def _export(cfg: DictConfig) -> Path:
    configure_console()
    settings = cfg.export
    wanted = _formats(settings)
    bundle = Path(settings.dir)
    if bundle.exists() and any(bundle.iterdir()):
        raise ConfigError(f"{bundle} already exists and is not empty: choose another export.dir")
    torch.manual_seed(cfg.seed)

    checkpoint_path = resolve_checkpoint(cfg.ckpt_path, cfg.paths.output_root, cfg.task_name)
    task, checkpoint = load_task(checkpoint_path)
    task.eval()
    data = cfg.data if cfg.get("data") else OmegaConf.create(checkpoint["hyper_parameters"]["data"])
    datamodule = build_datamodule(data, cfg.seed)
    batches = _validation_batches(task, datamodule)
    example = task.export_inputs(task.example_input(next(iter(datamodule.val_dataloader()))))

    with atomic_folder(bundle) as staging:
        started = time.perf_counter()
        int8_method = _write_formats(task, example, batches, wanted, settings, staging)
        verification = _verify(task, staging, wanted, batches, settings)
        verification.update(int8_method=int8_method, seconds=round(time.perf_counter() - started, 2))
        rows = zip(task.input_names, batches[0][0], strict=True)
        np.savez(staging / EXAMPLES, **{name: tensor.numpy() for name, tensor in rows})
        _write_drift_reference(task, batches, staging)
        write_json(staging / MANIFEST, _manifest(task, example, checkpoint_path, checkpoint, wanted, staging,
                                                 verification))
    log.info("bundle written to %s:\n%s", bundle, json.dumps(verification["metrics"], indent=1))
    return bundle


def _formats(settings: DictConfig) -> list[str]:
    wanted = list(settings.formats) + (["int8"] if settings.quantize else [])
    unknown = [name for name in wanted if name not in FORMAT_FILES]
    if unknown or settings.quantize not in (None, "int8"):
        raise ConfigError(f"export formats must be among {sorted(set(FORMAT_FILES) - {'int8'})} and "
                          f"export.quantize null or int8; got formats={list(settings.formats)} "
                          f"quantize={settings.quantize}")
    return wanted


def _validation_batches(task: Any, datamodule: Any) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The validation split as (inputs, target) batches: what export traces, verifies and calibrates on."""
    datamodule.setup("validate")
    batches = [task.split_batch(batch) for batch in datamodule.val_dataloader()]
    if not batches or len(batches[0][1]) < 2:
        raise ExportError("export needs a validation split with at least 2 samples in its first batch")
    return batches


def _verify(task: Any, staging: Path, wanted: list[str], batches: list, settings: DictConfig) -> dict[str, Any]:
    """Each format against eager: outputs at two batch sizes and the task's metric on the validation split."""
    runners = {name: formats.runner(name, staging / FORMAT_FILES[name]) for name in wanted}
    sizes = sorted({1, min(int(settings.check_batch_size), len(batches[0][1]))})
    outputs = compare_outputs(task, runners, [batches[0], batches[-1]] if len(batches) > 1 else batches, sizes)
    metrics = task_metrics(task, runners, batches)
    samples = sum(len(target) for _, target in batches)
    problems = failures(outputs, metrics, task.monitor, task.mode, settings.tolerance, settings.max_metric_drop,
                        samples)
    if problems:
        raise ExportError("export verification failed, no bundle written:\n  " + "\n  ".join(problems))
    return {"split": "val", "samples": samples, "batch_sizes": sizes,
            "formats": outputs, "metrics": metrics}


def _write_formats(task, example, batches, wanted: list[str], settings: DictConfig, staging: Path) -> str | None:
    module = formats.exportable_copy(task)
    if "onnx" in wanted or "int8" in wanted:
        formats.write_onnx(module, task, example, staging / FORMAT_FILES["onnx"], int(settings.opset))
        if task.onnx_fusions():
            formats.fuse_onnx(staging / FORMAT_FILES["onnx"], task.onnx_fusions())
    if "torchscript" in wanted:
        formats.write_torchscript(module, example, staging / FORMAT_FILES["torchscript"])
    if "torch_export" in wanted:
        formats.write_torch_export(module, task, example, staging / FORMAT_FILES["torch_export"])
    method = None
    if "int8" in wanted:
        calibration = ({name: t.numpy() for name, t in task.export_inputs(inputs).items()}
                       for inputs, _ in batches[: int(settings.calibration_batches)])
        method = formats.write_int8(staging / FORMAT_FILES["onnx"], staging / FORMAT_FILES["int8"], calibration,
                                    settings.int8_method)
        if "onnx" not in wanted:
            (staging / FORMAT_FILES["onnx"]).unlink()
    return method


def _write_drift_reference(task: Any, batches: list, staging: Path) -> None:
    """The drift reference (`converge.runtime.drift`): the plugin's statistics over the validation split, the
    training distribution without the training split's augmentation; none when the task has no preprocessor."""
    _, declared = registry.find_task(task.import_path())
    if not declared.preprocessor:
        return
    preprocessor = resolve(declared.preprocessor)(plain(task.serving_state()))
    observed: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for inputs, _ in batches:
            feeds = {name: tensor.numpy() for name, tensor in task.export_inputs(inputs).items()}
            for name, values in preprocessor.drift_statistics(feeds, task(*inputs).numpy()).items():
                observed.setdefault(name, []).append(values)
    if observed:
        write_json(staging / DRIFT_FILE, drift.reference(observed))


def _manifest(task, example: formats.Inputs, checkpoint_path: Path, checkpoint: dict, wanted: list[str],
              staging: Path, verification: dict[str, Any]) -> dict[str, Any]:
    plugin, declared = registry.find_task(task.import_path())
    with torch.no_grad():
        output = task(*task.forward_inputs(example))
    files = {path.name: file_record(path) for path in sorted(staging.iterdir()) if path.is_file()}
    return {
        "format_version": FORMAT_VERSION,
        "plugin": plugin.name,
        "task": declared.name,
        "task_module": task.import_path(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source_checkpoint": {"path": str(checkpoint_path.resolve()), "sha256": sha256_of(checkpoint_path),
                              "epoch": checkpoint.get("epoch")},
        "versions": {name: _version(name) for name in ("converge", "torch", "lightning", "onnx", "onnxruntime")}
        | {"python": platform.python_version()},
        "inputs": task.input_spec(example),
        "outputs": [{"name": name, "dtype": str(output.dtype).removeprefix("torch."),
                     "shape": ["batch", *output.shape[1:]]} for name in task.output_names],
        "preprocessing": plain(task.serving_state()),
        "formats": {name: FORMAT_FILES[name] for name in wanted},
        "files": files,
        "verification": verification,
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
