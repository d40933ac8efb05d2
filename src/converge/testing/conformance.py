"""The plugin conformance suite: what every converge task must do, checked for real.

Subclass `PluginConformance` in a test module and set `overrides` to the config
choices of a small, real run of your task (data and model). Each test composes
the real config, trains with a real Lightning Trainer on CPU for a few batches
and checks the run directory, the checkpoint contract and resuming; then exports
the checkpoint in every format (int8 included), checks the bundle's verification,
and, when the task declares a preprocessor and the class implements
`predict_inputs`, runs `converge predict` on those files in a fresh interpreter
that must never import torch or Lightning, checks that every answer is valid JSON
and that no answer depends on the other requests of its batch, and that bad input
(a missing or unreadable file, no input, an input with nothing to predict) is one
message naming it, exit code 2, and no output file. When the class implements `serve_instances`, the bundle is
served by a real `converge serve` on a free loopback port, and every JSON instance, sent alone by concurrent
clients (so the server batches them) and all in one body, must get `converge predict`'s answer. Transfer
learning: a task starts from a trained checkpoint's weights (a changed head is refused unless not strict); a
task with a `backbone()` trains frozen without moving it (nor its BatchNorm statistics), and its frozen
backbone's feature cache is written (into a folder of the test's own, never the user's data cache) and changes
no prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from converge.layout import METRICS_FILE, TENSORBOARD_DIR, last_checkpoint
from converge.testing.answers import same_answers
from converge.testing.compose import compose, predict

ALL_FORMATS = ["export.formats=[onnx,torchscript,torch_export]", "export.quantize=int8"]
_PREDICT_WITHOUT_TORCH = """
import sys
from converge.cli import main
code = main(sys.argv[1:])
heavy = [name for name in ("torch", "lightning", "hydra") if name in sys.modules]
assert not heavy, f"converge predict imported {heavy}"
sys.exit(code)
"""

SMOKE = ["debug=smoke", "hardware=cpu", "~callbacks.progress_bar", "~callbacks.model_summary"]


class PluginConformance:
    overrides: ClassVar[list[str]] = []  # e.g. ["data=vision/digits", "model=vision/cnn"]
    export_overrides: ClassVar[list[str]] = []  # e.g. a looser int8 tolerance for a barely trained model

    def predict_inputs(self, folder: Path) -> list[str] | None:
        """Write a few real input files for `converge predict` into `folder`; None skips the predict test."""
        return None

    def empty_predict_input(self, folder: Path) -> str | None:
        """Write into `folder` an input file of your format that holds nothing to predict (a CSV with its header
        and no rows), which `converge predict` must refuse; None (a format that cannot be empty) skips the test."""
        return None

    def serve_instances(self, folder: Path) -> list[tuple[Any, list[str]]] | None:
        """JSON instances for `converge serve`, each with the `converge predict` arguments (input files, options)
        that give the one answer it must get; files go into `folder`. None skips the serve test.

        Example::

            def serve_instances(self, folder):
                (folder / "a.txt").write_text("crude oil prices fell")
                return [({"text": "crude oil prices fell"}, [str(folder / "a.txt")])]
        """
        return None

    @pytest.fixture(scope="class")
    def trained(self, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        """One smoke training run shared by the tests of the class."""
        from converge.app.train import train

        run_dir = tmp_path_factory.mktemp("run") / "smoke"
        cfg = compose([*self.overrides, *SMOKE], output_dir=run_dir)
        train(cfg)
        return {"cfg": cfg, "run_dir": run_dir, "metrics": json.loads((run_dir / METRICS_FILE).read_text())}

    def test_train_writes_run_directory(self, trained: dict[str, Any]) -> None:
        run_dir, metrics = trained["run_dir"], trained["metrics"]
        assert last_checkpoint(run_dir).is_file()
        assert metrics["kept"]["checkpoint"] and Path(metrics["kept"]["checkpoint"]).is_file()
        assert metrics["monitor"] and metrics["mode"] in ("min", "max")
        assert metrics["test"], "the best checkpoint was not tested"
        assert all(key.startswith("test/") for key in metrics["test"])
        assert list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))

    def test_checkpoint_is_weights_only_and_rebuilds(self, trained: dict[str, Any]) -> None:
        from converge.app.build import load_task

        path = last_checkpoint(trained["run_dir"])
        torch.load(path, weights_only=True)  # plain data only: loads without trusting the file
        task, checkpoint = load_task(path)
        assert checkpoint["epoch"] == trained["metrics"]["epochs_trained"] - 1
        # The task is rebuilt from the data's spec: what serving needs beyond it goes through `serving_state`.
        assert task.spec == checkpoint["hyper_parameters"]["spec"], "the task wrote into its spec"
        json.dumps(task.serving_state(), allow_nan=False)  # plain JSON, for the bundle's manifest
        # The run followed the monitor of its composed config: the configured metric, else the task's own.
        assert trained["metrics"]["monitor"] == trained["cfg"].monitor.metric
        if not any(override.startswith("monitor.metric=") for override in self.overrides):
            assert trained["cfg"].monitor.metric == type(task).monitor

    def test_resume_continues_from_last(self, trained: dict[str, Any], tmp_path: Path) -> None:
        from converge.app.train import train

        last = last_checkpoint(trained["run_dir"])
        epochs = trained["metrics"]["epochs_trained"]
        cfg = compose([*self.overrides, *SMOKE, f"ckpt_path={last}", f"trainer.max_epochs={epochs + 1}"],
                      output_dir=tmp_path / "resumed")
        train(cfg)
        resumed = json.loads((tmp_path / "resumed" / METRICS_FILE).read_text())
        assert resumed["epochs_trained"] == epochs + 1
        assert torch.load(last_checkpoint(tmp_path / "resumed"), weights_only=True)["epoch"] == epochs

    def test_evaluate_checkpoint(self, trained: dict[str, Any], tmp_path: Path) -> None:
        from converge.app.evaluate import evaluate

        best = trained["metrics"]["kept"]["checkpoint"]
        cfg = compose([f"ckpt_path={best}", "+trainer.limit_test_batches=2"], output_dir=tmp_path / "eval",
                      config_name="eval")
        metrics = evaluate(cfg)
        assert metrics == pytest.approx(trained["metrics"]["test"], rel=1e-5)

    @pytest.fixture(scope="class")
    def bundle(self, trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
        from converge.app.export import export

        run_dir = tmp_path_factory.mktemp("export") / "run"
        cfg = compose([f"ckpt_path={trained['metrics']['kept']['checkpoint']}", *ALL_FORMATS, *self.export_overrides],
                      output_dir=run_dir, config_name="export")
        return export(cfg)

    def test_export_writes_a_verified_bundle(self, bundle: Path) -> None:
        from converge.checksums import sha256_of

        manifest = json.loads((bundle / "manifest.json").read_text())
        assert set(manifest["formats"]) == {"onnx", "torchscript", "torch_export", "int8"}
        for name, record in manifest["files"].items():
            assert sha256_of(bundle / name) == record["sha256"], name
        assert manifest["inputs"] and all(isinstance(spec["shape"][0], str) for spec in manifest["inputs"])
        assert any(spec["shape"][0] == "batch" for spec in manifest["inputs"])
        verification = manifest["verification"]
        assert len(set(verification["batch_sizes"])) == 2
        for name in manifest["formats"]:
            assert verification["formats"][name]["max_abs_diff"] >= 0
            assert set(verification["metrics"][name]) == set(verification["metrics"]["eager"])

    def test_bench_times_every_format_on_the_runtimes_batches(self, bundle: Path) -> None:
        from converge.app.bench import every_runner
        from converge.runtime.bench import bench
        from converge.runtime.bundle import Bundle

        opened = Bundle.open(bundle)
        table = bench(opened, every_runner(opened), batch_size=3, repeats=3)
        assert set(table) == {*opened.formats, "eager"}
        assert all(row["rows_per_s"] > 0 and row["p50_ms"] > 0 for row in table.values())

    def test_predict_round_trip_without_torch(self, bundle: Path, tmp_path: Path) -> None:
        inputs = self.predict_inputs(tmp_path)
        if inputs is None:
            pytest.skip("the test class gives no predict_inputs")
        output = tmp_path / "answers.jsonl"
        for model_format in ("onnx", "int8"):
            done = subprocess.run([sys.executable, "-c", _PREDICT_WITHOUT_TORCH, "predict", str(bundle), *inputs,
                                   "--output", str(output), "--batch-size", "2", "--format", model_format],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            answers = [json.loads(line, parse_constant=_refuse) for line in output.read_text().splitlines()]
            sources = [answer["input"] for answer in answers]  # a file, or file:line for many answers a file
            assert all(any(source.startswith(str(path)) for path in inputs) for source in sources)
            assert all(any(source.startswith(str(path)) for source in sources) for path in inputs)

    def test_answers_do_not_depend_on_the_batch(self, bundle: Path, tmp_path: Path) -> None:
        """One request at a time or several to a batch (padded, or bags of ids), each answer is the same."""
        inputs = self.predict_inputs(tmp_path)
        if inputs is None:
            pytest.skip("the test class gives no predict_inputs")
        answers = []
        for size in ("1", "3"):
            output = tmp_path / f"batch{size}.jsonl"
            assert predict([str(bundle), *inputs, "--output", str(output), "--batch-size", size]) == 0
            answers.append([json.loads(line) for line in output.read_text().splitlines()])
        assert same_answers(answers[0], answers[1]), f"batch 1: {answers[0]}\nbatch 3: {answers[1]}"

    @pytest.mark.parametrize("case", ["missing file", "unreadable file", "no inputs", "empty input"])
    def test_predict_refuses_bad_input_naming_it(self, bundle: Path, tmp_path: Path, case: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
        """One message naming the input, exit code 2, and no output file (not even a partial one)."""
        folder = tmp_path / "inputs"
        folder.mkdir()
        if self.predict_inputs(folder) is None:
            pytest.skip("the test class gives no predict_inputs")
        inputs = {"missing file": [str(folder / "missing.csv")], "no inputs": []}.get(case)
        if case == "unreadable file":
            (folder / "locked.csv").write_text("text\n")
            (folder / "locked.csv").chmod(0)
            if os.access(folder / "locked.csv", os.R_OK):
                pytest.skip("running as root: a file without permissions is still readable")
            inputs = [str(folder / "locked.csv")]
        if case == "empty input":
            empty = self.empty_predict_input(folder)
            if empty is None:
                pytest.skip("the test class gives no empty_predict_input")
            inputs = [empty]
        output = tmp_path / "out" / "answers.jsonl"
        output.parent.mkdir()
        assert predict([str(bundle), *inputs, "--output", str(output)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("converge: error: ") and "Traceback" not in error, error
        assert all(path in error for path in inputs), error
        assert not list(output.parent.iterdir()), "a refused input left output behind"

    def test_predict_refuses_an_output_it_cannot_write(self, bundle: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        inputs = self.predict_inputs(tmp_path)
        if inputs is None:
            pytest.skip("the test class gives no predict_inputs")
        output = tmp_path / "no such folder" / "answers.jsonl"
        assert predict([str(bundle), *map(str, inputs), "--output", str(output)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("converge: error: ") and str(output) in error and "Traceback" not in error, error

    def test_serve_answers_as_predict(self, bundle: Path, tmp_path: Path) -> None:
        import asyncio

        import httpx

        from converge.testing.serving import served

        cases = self.serve_instances(tmp_path)
        if cases is None:
            pytest.skip("the test class gives no serve_instances")
        expected = []
        for index, (_, arguments) in enumerate(cases):
            output = tmp_path / f"predict{index}.jsonl"
            assert predict([str(bundle), *arguments, "--output", str(output)]) == 0
            (answer,) = [json.loads(line) for line in output.read_text().splitlines()]
            expected.append(_without_input(answer))
        instances = [instance for instance, _ in cases]
        logs = tmp_path / "logs"
        with served([f"model={bundle}"], "--max-wait-ms", "20", "--log-requests", str(logs), "--log-sample", "1"
                    ) as server:
            url = f"{server.url}/v1/models/model/predict"

            async def alone() -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=60) as client:
                    return await asyncio.gather(*(client.post(url, json=instance) for instance in instances))

            responses = asyncio.run(alone())
            together = httpx.post(url, json={"instances": instances}, timeout=60)
            assert server.stop()[0] == 0
        assert all(response.status_code == 200 for response in [*responses, together]), together.text
        answered = [_without_input(response.json()["answers"][0]) for response in responses]
        assert same_answers(answered, expected), f"served: {answered}\npredicted: {expected}"
        assert same_answers([_without_input(answer) for answer in together.json()["answers"]], expected)
        logged = [json.loads(line) for line in (logs / "model" / "requests.jsonl").read_text().splitlines()]
        assert len(logged) == 2 * len(instances)  # each request logged (with its plugin's log_record)
        assert same_answers(sorted(json.dumps(line["answer"]) for line in logged),
                      sorted(json.dumps(answer) for r in [*responses, together] for answer in r.json()["answers"]))

    # -- transfer learning: pretrained weights (any task); freezing and its feature cache (a task with a backbone())
    def _task_from(self, trained: dict[str, Any], output_dir: Path, *overrides: str) -> tuple[Any, Any]:
        """The config of a run with these overrides, and the task it starts from (its pretrained weights and
        finetune strategy). The data is the smoke run's, so its spec is the checkpoint's: no data module to build."""
        from converge.app.build import build_task
        from converge.app.transfer import prepare_transfer

        cfg = compose([*self.overrides, *SMOKE, *overrides], output_dir=output_dir)
        spec = torch.load(last_checkpoint(trained["run_dir"]), weights_only=True)["hyper_parameters"]["spec"]
        task = build_task(cfg, spec)
        prepare_transfer(cfg, task)
        return cfg, task

    def test_initialises_from_a_trained_checkpoint_and_refuses_a_changed_head(self, trained: dict[str, Any],
                                                                              tmp_path: Path) -> None:
        from converge.errors import ConfigError
        from converge.training.pretrained import load_pretrained

        last = last_checkpoint(trained["run_dir"])
        source = torch.load(last, weights_only=True)
        _, task = self._task_from(trained, tmp_path / "same", f"pretrained.source={last}", "pretrained.into=task")
        assert all(torch.equal(task.state_dict()[key], value) for key, value in source["state_dict"].items())

        inside = {id(p) for p in task.backbone().parameters()} if task.backbone() is not None else set()
        head = next(name for name, p in task.named_parameters() if id(p) not in inside)
        changed = dict(source["state_dict"], **{head: torch.zeros(*source["state_dict"][head].shape, 2)})
        other = tmp_path / "other_head.ckpt"
        torch.save({**source, "state_dict": changed}, other)
        # What `pretrained.source=... pretrained.into=task [pretrained.strict=false]` does, into the task built above.
        with pytest.raises(ConfigError, match=head.replace(".", r"\.")):
            load_pretrained(task, str(other), into="task")
        load_pretrained(task, str(other), into="task", strict=False)
        kept = [key for key in changed if key != head]
        assert all(torch.equal(task.state_dict()[key], changed[key]) for key in kept)
        assert task.state_dict()[head].shape == source["state_dict"][head].shape

    @pytest.fixture(scope="class")
    def frozen(self, trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        """Two `finetune=frozen` runs from the smoke run's weights, with the same seed: the backbone's feature cache
        off, then on (the default), in a folder of the test's own (never the user's data cache). Two epochs, so the
        second reads the first's validation rows (and any training row drawn again) from the cache. Skips a task
        without a backbone()."""
        from converge.app.build import load_task
        from converge.app.train import train
        from converge.training.feature_cache import FEATURES_DIR_ENV, frozen_features_in
        from converge.training.pretrained import module_path

        last = last_checkpoint(trained["run_dir"])
        smoke, _ = load_task(last)
        if smoke.backbone() is None:
            pytest.skip(f"{type(smoke).__name__} has no backbone()")
        root = tmp_path_factory.mktemp("frozen")
        frozen = [f"pretrained.source={last}", "pretrained.into=task", "finetune=frozen", "monitor.keep=last"]
        cfg, task = self._task_from(trained, root / "cached", *frozen)
        features = frozen_features_in(task)
        assert features, f"{type(task).__name__} runs its backbone outside converge.FrozenFeatures: nothing is cached"
        task.finetuning.freeze_before_training(task)  # the cache is named by the backbone as training freezes it
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(FEATURES_DIR_ENV, str(root / "features"))
            cache = features[0].path(task.backbone())
            train(compose([*self.overrides, *SMOKE, *frozen, "finetune.cache_features=false"],
                          output_dir=root / "plain"))
            written_without_cache = cache.exists()
            train(cfg)
        return {"pretrained": last, "runs": {"plain": root / "plain", "cached": root / "cached"}, "cache": cache,
                "root": root, "written_without_cache": written_without_cache,
                "backbone": module_path(task, task.backbone())}

    def test_frozen_backbone_and_its_batchnorm_statistics_do_not_change(self, frozen: dict[str, Any]) -> None:
        before = torch.load(frozen["pretrained"], weights_only=True)["state_dict"]
        for name, run_dir in frozen["runs"].items():
            after = torch.load(last_checkpoint(run_dir), weights_only=True)["state_dict"]
            moved = {key for key in before if not torch.equal(before[key], after[key])}
            assert moved and not {key for key in moved if key.startswith(frozen["backbone"])}, (name, sorted(moved))

    def test_frozen_backbone_features_are_cached_and_change_no_prediction(self, frozen: dict[str, Any]) -> None:
        from converge.training.feature_cache import FeatureCache

        assert not frozen["written_without_cache"], "finetune.cache_features=false wrote a feature cache"
        assert frozen["cache"].is_relative_to(frozen["root"]), "the test wrote into the user's feature cache"
        assert frozen["cache"].is_file() and FeatureCache(frozen["cache"]).rows
        plain, cached = (torch.load(last_checkpoint(frozen["runs"][name]), weights_only=True)["state_dict"]
                         for name in ("plain", "cached"))
        assert not [key for key in plain if not torch.equal(plain[key], cached[key])]  # the same head, bit for bit
        plain, cached = (json.loads((frozen["runs"][name] / METRICS_FILE).read_text()) for name in ("plain", "cached"))
        assert (plain["kept"]["score"], plain["test"]) == (cached["kept"]["score"], cached["test"])


def _without_input(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without its source (a file for predict, the instance's place in the body for serve)."""
    return {key: value for key, value in answer.items() if key != "input"}


def _refuse(constant: str) -> None:
    raise AssertionError(f"an answer holds {constant}, which is not JSON (write null and non_finite: true)")
