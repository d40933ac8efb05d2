"""`converge serve` for real: a smoke-trained digits bundle behind a server on a free loopback port, a real HTTP
client, many concurrent clients; each answer checked against `converge predict` on the same input."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from converge.testing import compose, predict, run_cli, served

DIGITS = ["data=vision/digits", "model=vision/cnn", "debug=smoke", "hardware=cpu", "~callbacks.progress_bar",
          "~callbacks.model_summary"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converge.app.export import export
    from converge.app.train import train

    root = tmp_path_factory.mktemp("serve")
    train(compose(DIGITS, output_dir=root / "run"))
    checkpoint = json.loads((root / "run" / "metrics.json").read_text())["kept"]["checkpoint"]
    return export(compose([f"ckpt_path={checkpoint}", f"export.dir={root / 'digits'}"], output_dir=root / "export",
                          config_name="export"))


@pytest.fixture(scope="module")
def digits(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The bundle's validation images as .npy files and JSON instances, with `converge predict`'s answers."""
    folder = tmp_path_factory.mktemp("digits")
    images = np.load(bundle / "example_inputs.npz")["images"][:24]
    files = []
    for i, image in enumerate(images):
        files.append(str(folder / f"{i}.npy"))
        np.save(files[-1], image)
    assert predict([str(bundle), *files, "--output", str(folder / "answers.jsonl")]) == 0
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    for answer in answers:
        del answer["input"]
    return {"instances": [{"pixels": image.tolist()} for image in images], "answers": answers}


def _without_input(answers: list[dict]) -> list[dict]:
    return [{key: value for key, value in answer.items() if key != "input"} for answer in answers]


async def _clients(url: str, instances: list, clients: int, rounds: int) -> list[tuple[int, int, dict]]:
    """`clients` concurrent clients, each posting `rounds` one-instance requests: (instance index, status, body)."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        async def one(c: int) -> list[tuple[int, int, dict]]:
            seen = []
            for r in range(rounds):
                index = (c * rounds + r) % len(instances)
                response = await client.post(url, json=instances[index])
                seen.append((index, response.status_code, response.json()))
            return seen

        return [item for seen in await asyncio.gather(*(one(c) for c in range(clients))) for item in seen]


def test_concurrent_answers_equal_predict_and_are_batched(bundle: Path, digits: dict) -> None:
    with served([bundle], "--max-wait-ms", "5", "--max-batch-size", "16") as server:
        url = f"{server.url}/v1/models/digits/predict"
        for clients in (1, 8, 64):
            results = asyncio.run(_clients(url, digits["instances"], clients, rounds=3))
            assert len(results) == clients * 3
            for index, status, body in results:
                assert status == 200, body
                assert _without_input(body["answers"]) == [digits["answers"][index]], index
        many = httpx.post(url, json={"instances": digits["instances"]}).json()["answers"]
        assert _without_input(many) == digits["answers"]
        assert [answer["input"] for answer in many[:2]] == ["instances[0]", "instances[1]"]
        calls = server.metric("converge_batch_rows_count", model="digits")
        rows = server.metric("converge_batch_rows_sum", model="digits")
        assert rows == 3 * (1 + 8 + 64) + len(digits["instances"])
        assert calls < rows / 2, "concurrent requests were not coalesced into batches"
        assert server.metric("converge_requests_total", model="digits", status="200") == 3 * 73 + 1
        assert server.metric("converge_model_info", model="digits", task="image_classification") == 1


def test_api_describes_models_health_and_metrics(bundle: Path, digits: dict) -> None:
    with served([f"digits={bundle}", f"again={bundle}"]) as server:
        assert server.get("/healthz") == {"status": "alive"}
        assert server.get("/readyz") == {"ready": True, "models": ["again", "digits"]}
        listed = server.get("/v1/models")["models"]
        assert [model["name"] for model in listed] == ["digits", "again"]
        described = server.get("/v1/models/again")
        assert described["inputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
        assert '{"pixels"' in described["request_schema"]
        response = httpx.post(f"{server.url}/v1/models/again/predict", json=digits["instances"][0])
        assert _without_input(response.json()["answers"]) == digits["answers"][:1]
        metrics = server.get("/metrics")
        for family in ("converge_requests_total", "converge_request_seconds_bucket", "converge_batch_rows_bucket",
                       "converge_queue_depth", "converge_model_info"):
            assert family in metrics, family
        unknown = httpx.post(f"{server.url}/v1/models/nope/predict", json={})
        assert unknown.status_code == 404 and "digits" in unknown.json()["error"]


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "body: not valid JSON"),
    (b'{"pixels": [[1, 2], [3, 4]]}', 422, "body.pixels: image is 2x2 with 1 channel(s), the model takes 8x8"),
    (b'{"pixel": []}', 422, "body.pixels: missing"),
    (b'{"pixels": "abc"}', 422, "body.pixels: expected list, got str"),
    (b'{"pixels": [[1, 2], [3]]}', 422, "body.pixels: not a rectangular array"),
    (b'{"pixels": [[300]]}', 422, "body.pixels: integer pixels must lie in 0-255"),
    (b'{"image": "not base64!"}', 422, "body.image: not base64"),
    (b'{"instances": [{"pixels": [[0.5]]}]}', 422, "instances[0].pixels: image is 1x1"),
    (b'{"instances": []}', 422, "instances: expected a non-empty list"),
    (b'[1, 2]', 422, "body: expected a JSON object, got list"),
])
def test_bad_input_is_a_4xx_naming_the_field(bundle: Path, digits: dict, body: bytes, status: int,
                                             message: str, served_digits) -> None:
    response = httpx.post(f"{served_digits.url}/v1/models/digits/predict", content=body)
    assert response.status_code == status and message in response.json()["error"], response.text
    fine = httpx.post(f"{served_digits.url}/v1/models/digits/predict", json=digits["instances"][0])
    assert fine.status_code == 200  # the worker lives on


def test_an_oversized_body_is_413_without_being_read_whole(served_digits) -> None:
    url = f"{served_digits.url}/v1/models/digits/predict"
    response = httpx.post(url, content=b"[" * (9 * 1024 * 1024))
    assert response.status_code == 413 and "body: over the limit" in response.json()["error"]

    def chunks():  # no Content-Length: the server stops reading past the limit
        for _ in range(20):
            yield b" " * (1024 * 1024)

    assert httpx.post(url, content=chunks()).status_code == 413


@pytest.fixture(scope="module")
def served_digits(bundle: Path):
    with served([bundle]) as server:
        yield server


def test_a_png_instance_answers_as_the_png_file(bundle: Path, digits: dict, served_digits, tmp_path: Path) -> None:
    import base64

    from PIL import Image

    pixels = (np.asarray(digits["instances"][3]["pixels"])[0] * 255).round().astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "3.png")
    assert predict([str(bundle), str(tmp_path / "3.png"), "--output", str(tmp_path / "a.jsonl")]) == 0
    expected = _without_input([json.loads((tmp_path / "a.jsonl").read_text())])
    png = base64.b64encode((tmp_path / "3.png").read_bytes()).decode()
    response = httpx.post(f"{served_digits.url}/v1/models/digits/predict", json={"image": png})
    assert _without_input(response.json()["answers"]) == expected


def test_a_full_queue_is_503_and_a_late_request_504_and_a_gone_client_leaves_nothing(bundle: Path,
                                                                                      digits: dict) -> None:
    instance = digits["instances"][0]
    with served([bundle], "--max-queue", "2", "--max-wait-ms", "400", "--max-batch-size", "64") as server:
        url = f"{server.url}/v1/models/digits/predict"

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as client:
                return await asyncio.gather(*(client.post(url, json=instance) for _ in range(5)))

        statuses = sorted(response.status_code for response in asyncio.run(burst()))
        assert statuses == [200, 200, 503, 503, 503]
        refused = httpx.post(url, json=instance, headers={"X-Timeout-Ms": "50"})
        assert refused.status_code == 504 and "deadline" in refused.json()["error"]
        with pytest.raises(httpx.ReadTimeout):  # the client leaves while its request waits for a batch
            httpx.post(url, json=instance, timeout=0.1)
        time.sleep(0.6)
        assert server.metric("converge_queue_depth", model="digits") == 0
        assert server.metric("converge_batch_rows_sum", model="digits") == 2, "a cancelled request still ran"
        assert server.metric("converge_requests_total", model="digits", status="503") == 3
        assert server.metric("converge_requests_total", model="digits", status="499") == 1


def test_sigterm_answers_every_accepted_request_then_exits_0(bundle: Path, digits: dict) -> None:
    with served([bundle], "--max-wait-ms", "500") as server:
        url = f"{server.url}/v1/models/digits/predict"

        async def accepted_then_stopped() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as client:
                posts = [asyncio.create_task(client.post(url, json=i)) for i in digits["instances"][:10]]
                await asyncio.sleep(0.2)  # accepted, waiting for their batch
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*posts)

        responses = asyncio.run(accepted_then_stopped())
        assert [response.status_code for response in responses] == [200] * 10
        assert [_without_input(r.json()["answers"])[0] for r in responses] == digits["answers"][:10]
        assert server.process.wait(timeout=10) == 0
        assert "stopped, 10 predict requests answered" in server.stderr()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")


def test_user_mistakes_are_one_message_and_exit_code_2(bundle: Path, tmp_path: Path) -> None:
    done = run_cli(["serve", str(tmp_path / "missing")])
    assert done.returncode == 2 and "not an export bundle" in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_cli(["serve", str(bundle), "--port", str(taken.getsockname()[1])])
    assert done.returncode == 2 and "choose another --port" in done.stderr, done.stderr
    done = run_cli(["serve", str(bundle), "--max-batch-size", "0"])
    assert done.returncode == 2 and "--max-batch-size" in done.stderr


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The digits test split (held out, the training distribution) and the same digits inverted, as .npy files."""
    from converge.testing import build_datamodule

    data = build_datamodule(compose(DIGITS).data)
    data.setup("test")
    images = np.concatenate([batch[0].numpy() for batch in data.test_dataloader()])[:300]
    folder = tmp_path_factory.mktemp("held_out")
    files: dict[str, list[str]] = {"same": [], "inverted": []}
    for i, image in enumerate(images):
        for kind, pixels in (("same", image), ("inverted", 1.0 - image)):
            files[kind].append(str(folder / f"{kind}{i}.npy"))
            np.save(files[kind][-1], pixels.astype(np.float32))
    return files


def test_drift_is_flagged_on_inverted_digits_and_not_on_held_out_ones(bundle: Path, held_out: dict) -> None:
    reference = json.loads((bundle / "drift.json").read_text())
    assert set(reference) == {"pixel_intensity", "predicted_class"}
    assert json.loads((bundle / "manifest.json").read_text())["files"]["drift.json"]["sha256"]
    offline = {}
    for kind, files in held_out.items():
        done = run_cli(["drift", str(bundle), *files])
        assert done.returncode == 0, done.stderr
        offline[kind] = json.loads(done.stdout)
        assert offline[kind]["rows"] == len(files)
    assert not offline["same"]["drift"], offline["same"]
    assert offline["inverted"]["statistics"]["pixel_intensity"]["drift"], offline["inverted"]
    assert offline["inverted"]["statistics"]["pixel_intensity"]["psi"] > 1.0

    with served([bundle], "--drift-window", "200") as server:
        url = f"{server.url}/v1/models/digits/predict"
        live = {}
        for kind in ("same", "inverted"):
            instances = [{"pixels": np.load(file).tolist()} for file in held_out[kind][:200]]
            for start in range(0, 200, 50):
                assert httpx.post(url, json={"instances": instances[start:start + 50]}).status_code == 200
            live[kind] = server.get("/v1/models/digits/drift")
            assert live[kind]["rows"] == 200  # the window holds the last 200 rows only
        assert not live["same"]["drift"] and live["inverted"]["statistics"]["pixel_intensity"]["drift"], live
        assert server.metric("converge_drift_psi", model="digits", statistic="pixel_intensity") == pytest.approx(
            live["inverted"]["statistics"]["pixel_intensity"]["psi"])


def test_request_log_is_read_back_by_the_plugins_data_source(bundle: Path, digits: dict, tmp_path: Path) -> None:
    from converge_vision.sources import ImageFolder

    logs = tmp_path / "logs"
    with served([bundle], "--log-requests", str(logs), "--log-sample", "1") as server:
        url = f"{server.url}/v1/models/digits/predict"
        answers = httpx.post(url, json={"instances": digits["instances"][:6]}).json()["answers"]
        answers += httpx.post(url, json=digits["instances"][6]).json()["answers"]
        assert server.stop()[0] == 0  # the log is complete once the server has stopped
    lines = [json.loads(line) for line in (logs / "digits" / "requests.jsonl").read_text().splitlines()]
    assert [line["answer"] for line in lines] == answers
    assert [line["request"] for line in lines] == digits["instances"][:7]
    images = ImageFolder(str(logs / "digits"), image_size=(8, 8), channels=1).load()
    assert len(images.labels) == 7
    logged = sorted(images.class_names[int(label)] for label in images.labels)
    assert logged == sorted(answer["label"] for answer in answers)
    sums = sorted(float(images.load(i).sum()) for i in range(7))  # the images the model saw, as PNGs
    assert np.allclose(sums, sorted(np.asarray(i["pixels"]).sum() for i in digits["instances"][:7]), atol=0.2)


def test_models_are_named_after_their_folder_or_as_told() -> None:
    from converge.errors import ConvergeError
    from converge.serving.model import named_bundles

    assert named_bundles(["out/digits-bundle", "news=b/text", "/tmp/a=b/model"]) == {
        "digits-bundle": "out/digits-bundle", "news": "b/text", "model": "/tmp/a=b/model"}
    with pytest.raises(ConvergeError, match="two bundles are named 'digits'"):
        named_bundles(["a/digits", "b/digits"])


@pytest.mark.parametrize("batch_seconds", [0.0, 1.0], ids=["in the event loop", "in a thread"])
def test_the_batcher_coalesces_waiting_requests_into_one_call_in_order(batch_seconds: float) -> None:
    import threading

    from converge.runtime.processing import Request
    from converge.serving.batcher import Batcher

    calls: list[tuple[list[str], bool]] = []

    def run(requests: list[Request]) -> list[str]:
        calls.append(([request.source for request in requests], threading.current_thread() is threading.main_thread()))
        return [request.source.upper() for request in requests]

    async def burst() -> list[list[str]]:
        batcher = Batcher(run, max_rows=3, max_wait=0.05, max_queue=10, batch_seconds=batch_seconds)
        batcher.start()
        futures = [batcher.submit([Request(name, {"x": np.zeros((1, 2))})]) for name in "abcd"]
        answers = await asyncio.gather(*futures)
        await batcher.stop()
        return answers

    assert asyncio.run(burst()) == [["A"], ["B"], ["C"], ["D"]]
    in_loop = batch_seconds == 0.0
    assert calls == [(["a", "b", "c"], in_loop), (["d"], in_loop)]  # full at 3 rows, then the rest after max_wait


def test_requests_of_a_costly_model_are_grouped_by_size_to_spare_padding() -> None:
    from converge.runtime.processing import Request
    from converge.serving.model import similar_sizes

    requests = [Request(str(i), {"token_ids": np.zeros((1, length), np.int64)}) for i, length in
                enumerate([2, 10, 3, 11])]
    assert similar_sizes(requests) == [[0, 2], [1, 3]]  # padding 2 and 3 to 11 would triple their work
    assert similar_sizes(requests, waste=10.0) == [[0, 2, 1, 3]]


def test_a_costly_model_answers_in_order_whatever_its_groups(bundle: Path, digits: dict,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from converge.serving import model as served
    from converge.testing import same_answers

    model = served.ServedModel.load("digits", bundle)
    requests = [model.preprocessor.from_json(instance)[0] for instance in digits["instances"][:5]]
    whole = model.answer(requests)
    monkeypatch.setattr(model, "row_seconds", 1.0)  # costly: grouped by size
    monkeypatch.setattr(served, "similar_sizes", lambda requests: [[3, 0], [4, 1, 2]])
    assert same_answers(model.answer(requests), whole)


def test_the_batcher_waits_by_default_only_where_the_model_runs_in_the_event_loop() -> None:
    from converge.serving.batcher import INLINE_WAIT, Batcher

    async def waits(batch_seconds: float) -> float:
        return Batcher(lambda requests: [], 8, None, 10, batch_seconds=batch_seconds).max_wait

    assert asyncio.run(waits(0.0)) == INLINE_WAIT and asyncio.run(waits(1.0)) == 0.0
