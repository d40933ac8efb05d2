"""`converge serve` under load: a real load generator (bench/loadgen.py) against real servers on 127.0.0.1.

    python bench/serve.py BUNDLE                     # every phase; a digits bundle for the issue's targets
    python bench/serve.py BUNDLE --phases saturation latency --seconds 5

Phases (each starts its own server, the same stack, and stops it with SIGTERM):

- saturation: closed loop, `--clients` clients (64) each posting one row per request as fast as answers come,
  against the batching server (`--max-batch-size 64`, the server's default `--max-wait-ms` unless given) and a
  server without batching (`--max-batch-size 1`); and the in-process onnxruntime throughput at batch 64
  (`converge bench`'s onnx row).
  Targets: batching >= 5x no batching, and >= 50% of in-process.
- latency: open loop, Poisson arrivals at half the saturation throughput; p50/p99 (target p99 <= 10 ms).
- soak: open loop at 80% of saturation for `--soak-seconds` (60), 5% malformed requests; every answer checked
  against the runtime's own answer for its input, malformed ones must get a 4xx. Targets: 0 5xx, 0 lost or wrong
  answers, server RSS growth <= 10% (after the first 10% of the soak, the warm-up).
- sigterm: the soak's load, SIGTERM half-way, a connection per request: every request the server accepted must
  be answered (the count it says on stopping equals the responses the client received; a connection it closed
  unread, or refused, was not accepted), and the server exits 0.
- restart: process start to /readyz 200 (target < 2 s), median of 5.

The load generator shares the machine with the server: on 2 cores it takes a part of them, so the figures are
conservative. Print a table, and `--json FILE` for the record.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from loadgen import Client, Lost, Refused, Response

from converge.runtime.bench import bench as in_process_bench
from converge.runtime.bench import onnx_runners
from converge.runtime.bundle import EXAMPLES, Bundle
from converge.serving.model import ServedModel
from converge.testing import same_answers, served

MALFORMED = [b'{"pixels": [[1, 2], [3, 4]]}', b"{not json", b'{"pixel": 1}', b'{"instances": []}']


def workload(bundle: Path, bodies_file: Path | None) -> tuple[list[bytes], list[dict[str, Any]]]:
    """One-instance request bodies and the runtime's own answer to each: the lines of `bodies_file` (JSONL, one
    body a line, in the plugin's request schema), or else the bundle's validation images (vision)."""
    if bodies_file is not None:
        bodies = [line.encode() for line in bodies_file.read_text().splitlines() if line.strip()]
    else:
        with np.load(bundle / EXAMPLES) as stored:
            bodies = [json.dumps({"pixels": image.tolist()}).encode() for image in stored["images"]]
    model = ServedModel.load("bench", bundle)
    expected = [{**model.answer(model.preprocessor.from_json(json.loads(body)))[0], "input": "body"}
                for body in bodies]
    return bodies, json.loads(json.dumps(expected))  # as JSON carries them


class Load:
    """Requests sent and what came back, checked once the load is over (checking costs the generator's CPU):
    latencies of 200s, status counts, wrong answers, lost and refused requests.

    A malformed request (index None) must get a 4xx; any other must get the runtime's answer for its body."""

    def __init__(self, url: str, bodies: list[bytes], expected: list[dict[str, Any]]) -> None:
        self.url, self.bodies, self.expected = url, bodies, expected
        self.responses: list[tuple[int | None, Response]] = []
        self.lost = self.refused = 0

    async def one(self, client: Client, index: int | None) -> None:
        try:
            response = await client.post(random.choice(MALFORMED) if index is None else self.bodies[index])
        except Refused:
            self.refused += 1  # never accepted: the server was not listening (any more)
            return
        except Lost:
            self.lost += 1  # sent, never answered
            return
        self.responses.append((index, response))

    def checked(self) -> dict[str, Any]:
        statuses: dict[int, int] = {}
        wrong, latencies = 0, []
        for index, response in self.responses:
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if index is None:
                wrong += not 400 <= response.status < 500
            elif response.status == 200:
                latencies.append(response.seconds)
                wrong += not same_answers(json.loads(response.body)["answers"][0], self.expected[index])
        return {"statuses": statuses, "wrong": wrong, "lost": self.lost, "refused": self.refused,
                "answered": len(latencies), **_percentiles(latencies)}

    async def closed_loop(self, clients: int, seconds: float) -> float:
        """Rows per second with `clients` clients each sending as soon as its last answer came."""
        client_pool = Client(self.url, connections=clients)
        stop = time.perf_counter() + seconds

        async def client(c: int) -> None:
            i = c
            while time.perf_counter() < stop:
                await self.one(client_pool, i % len(self.bodies))
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
        client_pool.close()
        return sum(response.status == 200 for _, response in self.responses) / elapsed

    async def open_loop(self, rate: float, seconds: float, malformed: float = 0.0, during: Any = None,
                        fresh_connections: bool = False) -> None:
        """Poisson arrivals at `rate` per second for `seconds`; `during(elapsed)` is called as it goes. With
        `fresh_connections` each request has a connection of its own: a request the server has not accepted
        is then refused at connect, never lost on a kept-alive connection the stopping server closes."""
        rng = random.Random(0)
        tasks = []
        client = Client(self.url, connections=256, fresh_connections=fresh_connections)  # as a proxy would
        started = time.perf_counter()
        next_at, i = started, 0
        while (now := time.perf_counter()) - started < seconds:
            if during is not None:
                during(now - started)
            # always yield, also when behind schedule: else the requests wait for the generator
            await asyncio.sleep(max(0.0, next_at - now))
            index = None if rng.random() < malformed else i % len(self.bodies)
            tasks.append(asyncio.ensure_future(self.one(client, index)))
            i += 1
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        client.close()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))} if len(ms) else {}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other machines (/proc/stat): a run with steal measured a slower machine."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    bodies, expected = workload(args.bundle, args.bodies)
    # The generator keeps every response until the load is over: its collector's passes over them paused it,
    # and the pause counted as the server's latency (p99 at half saturation, 3 runs each, taking turns on a
    # quiet machine: 9.0-42 ms with the collector, 6.6-7.3 ms without)
    gc.disable()
    flags = ["--max-batch-size", str(args.max_batch_size), "--threads", str(args.threads),
             *(["--max-wait-ms", args.max_wait_ms] if args.max_wait_ms is not None else [])]
    results: dict[str, Any] = {"server_flags": " ".join(flags)}
    saturation = args.rate
    if "saturation" in args.phases or not saturation:
        table = in_process_bench(Bundle.open(args.bundle), onnx_runners(Bundle.open(args.bundle), args.threads),
                                 batch_size=64, repeats=200)
        results["in_process_rows_per_s"] = table["onnx"]["rows_per_s"]
        for name, batching in (("batching", flags), ("no_batching", ["--max-batch-size", "1", "--threads",
                                                                        str(args.threads)])):
            with served([f"bench={args.bundle}"], *batching) as server:
                load = Load(f"{server.url}/v1/models/bench/predict", bodies, expected)
                cpu, client_cpu = _cpu_seconds(server.process.pid), time.process_time()
                results[f"{name}_rows_per_s"] = uvloop.run(load.closed_loop(args.clients, args.seconds))
                cpu, client_cpu = _cpu_seconds(server.process.pid) - cpu, time.process_time() - client_cpu
                checked = load.checked()
                results[f"{name}_wrong"] = checked["wrong"]
                # where a request's time goes: the server's and the load generator's CPU per answered request
                results[f"{name}_server_cpu_us_per_request"] = 1e6 * cpu / max(1, checked["answered"])
                results[f"{name}_client_cpu_us_per_request"] = 1e6 * client_cpu / max(1, checked["answered"])
        saturation = results["batching_rows_per_s"]
        results["batching_over_no_batching"] = saturation / results["no_batching_rows_per_s"]
        results["batching_over_in_process"] = saturation / results["in_process_rows_per_s"]
    if "latency" in args.phases:
        with served([f"bench={args.bundle}"], *flags) as server:
            load = Load(f"{server.url}/v1/models/bench/predict", bodies, expected)
            uvloop.run(load.open_loop(saturation / 2, args.seconds))
            results["half_saturation"] = {"rate": saturation / 2, **load.checked()}
    if "soak" in args.phases:
        with served([f"bench={args.bundle}"], *flags) as server:
            load = Load(f"{server.url}/v1/models/bench/predict", bodies, expected)
            rss: list[int] = []  # after the warm-up (10% of the soak), and at its end

            def sample(elapsed: float) -> None:
                if not rss and elapsed > args.soak_seconds / 10:
                    rss.append(_rss_kib(server.process.pid))

            uvloop.run(load.open_loop(0.8 * saturation, args.soak_seconds, malformed=0.05, during=sample))
            rss.append(_rss_kib(server.process.pid))
            checked = load.checked()
            results["soak"] = {"rate": 0.8 * saturation, "seconds": args.soak_seconds, **checked,
                               "server_errors": sum(n for s, n in checked["statuses"].items() if s >= 500),
                               "rss_kib": rss, "rss_growth": rss[-1] / rss[0] - 1 if len(rss) > 1 else None}
    if "sigterm" in args.phases:
        with served([f"bench={args.bundle}"], *flags) as server:
            load = Load(f"{server.url}/v1/models/bench/predict", bodies, expected)
            sent = []

            def stop_half_way(elapsed: float) -> None:
                if not sent and elapsed > args.seconds / 2:
                    server.process.send_signal(signal.SIGTERM)
                    sent.append(elapsed)

            uvloop.run(load.open_loop(0.8 * saturation, args.seconds, during=stop_half_way, fresh_connections=True))
            exit_code = server.process.wait(timeout=30)
            said = server.stderr()
            server_answered = int(said.split("stopped, ")[1].split()[0]) if "stopped, " in said else None
            checked = load.checked()
            # every request the server accepted (read) was answered: what it answered, the client received
            results["sigterm"] = {"received": sum(checked["statuses"].values()), "server_answered": server_answered,
                                  "statuses": checked["statuses"], "not_read_by_server": checked["lost"],
                                  "refused_after_stop": checked["refused"], "wrong": checked["wrong"],
                                  "exit_code": exit_code}
    if "restart" in args.phases:
        results["restart_ready_s"] = statistics.median(_ready_times(args.bundle, flags))
    return results


def _ready_times(bundle: Path, flags: list[str], times: int = 5) -> list[float]:
    """Process start to /readyz 200, each a fresh server."""
    seconds = []
    for _ in range(times):
        started = time.monotonic()
        with served([f"bench={bundle}"], *flags):
            seconds.append(time.monotonic() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="an exported bundle (digits for the issue's targets)")
    parser.add_argument("--phases", nargs="+", default=["saturation", "latency", "soak", "sigterm", "restart"],
                        choices=["saturation", "latency", "soak", "sigterm", "restart"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the saturation and latency runs")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (server and in-process)")
    parser.add_argument("--bodies", type=Path,
                        help="JSONL, one request body a line (default: the bundle's validation images, vision)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="the batching server's --max-batch-size")
    parser.add_argument("--max-wait-ms", help="the batching server's --max-wait-ms (default: the server's)")
    parser.add_argument("--rate", type=float, default=None,
                        help="the saturation throughput, when the saturation phase is not run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    steal = _steal_seconds()
    results = run(args)
    results["steal_seconds"] = _steal_seconds() - steal
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
