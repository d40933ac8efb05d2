"""A real `converge serve` in a fresh interpreter on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from converge.testing.compose import free_port


@contextmanager
def served(bundles: Sequence[str | Path], *flags: str, ready_within: float = 60.0) -> Iterator[Server]:
    """`converge serve BUNDLES FLAGS` on 127.0.0.1, ready (its /readyz answered 200) when the block starts,
    stopped with SIGTERM when it ends.

    Example::

        with served([bundle], "--max-wait-ms", "5") as server:
            answers = httpx.post(f"{server.url}/v1/models/bundle/predict", json={"text": "hi"}).json()
    """
    port = free_port()
    with tempfile.TemporaryFile("w+") as said:  # a file, not a pipe: a long run's output never blocks the server
        process = subprocess.Popen([sys.executable, "-m", "converge.cli", "serve", *map(str, bundles),
                                    "--port", str(port), *flags], stdout=subprocess.DEVNULL, stderr=said,
                                   text=True, env=os.environ.copy())
        server = Server(process, f"http://127.0.0.1:{port}", said)
        try:
            server.wait_ready(ready_within)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class Server:
    def __init__(self, process: subprocess.Popen, url: str, said: IO[str]) -> None:
        self.process, self.url, self._said = process, url, said

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self._said.seek(0)
        return self._said.read()

    def wait_ready(self, within: float) -> float:
        """Seconds until /readyz answers 200; an AssertionError with the server's stderr if it exits or never does."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.process.poll() is not None:
                raise AssertionError(f"converge serve exited {self.process.returncode}: {self.stderr()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"converge serve was not ready within {within} s")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            body = response.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return self.process.returncode, self.stderr()
