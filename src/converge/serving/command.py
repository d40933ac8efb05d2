"""`converge serve BUNDLE [BUNDLE ...]`: load and verify every bundle, bind the port, serve until SIGTERM.

Every user mistake (a bad bundle path, a port in use, a bad flag) is refused before anything is served: one
message, exit code 2. SIGTERM or Ctrl-C stops accepting connections, answers every request already accepted,
then exits 0 (uvicorn's graceful shutdown, with no time limit).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from converge.errors import ConvergeError
from converge.runtime.processing import positive_int
from converge.serving.app import Server, Settings
from converge.serving.model import ServedModel, named_bundles


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="converge serve", description="Serve bundles over HTTP (JSON API).")
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE",
                        help="bundle directories written by `converge export` (NAME=PATH names a model; "
                             "by default it is named after its folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves other machines too)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port, printed)")
    parser.add_argument("--format", default="onnx", choices=["onnx", "int8"], help="model format (default onnx)")
    parser.add_argument("--max-batch-size", type=positive_int, default=64, help="rows per model call (default 64)")
    # By default 0 for a model run in a thread (what arrives during a batch makes the next: p50 2.2 ms against 4.4
    # waiting 2 ms, digits at half saturation, the same throughput), 2 for one cheap enough to run in the event
    # loop (else every batch is one request): converge.serving.batcher.
    parser.add_argument("--max-wait-ms", type=float, default=None,
                        help="how long the oldest waiting request may wait for others to batch with (default: 0, "
                             "or 2 for a model under 0.5 ms a batch, which runs in the event loop)")
    # One by default: the event loop, the HTTP parsing and the other models need the cores too, and onnxruntime's
    # spinning pool threads take them (2 threads halved the requests/s of 1 on a 2-core machine).
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="onnxruntime intra-op threads per model (default 1; more for a large model)")
    parser.add_argument("--max-queue", type=positive_int, default=1024,
                        help="requests waiting per model; past it a request gets 503 (default 1024)")
    parser.add_argument("--timeout-ms", type=float, default=10_000.0,
                        help="a request's deadline; past it 504 (default 10000; a request's X-Timeout-Ms header)")
    parser.add_argument("--drift-window", type=positive_int, default=2000,
                        help="rows the live drift statistics cover (default 2000)")
    parser.add_argument("--log-requests", type=Path, metavar="DIR",
                        help="log a sample of requests with their answers here (off by default; see README)")
    parser.add_argument("--log-sample", type=float, default=0.1,
                        help="the share of requests --log-requests logs (default 0.1)")
    return parser


def main(args: Sequence[str]) -> int:
    options = parser().parse_args(args)
    if (options.max_wait_ms or 0) < 0 or options.timeout_ms <= 0 or not 0 < options.log_sample <= 1:
        raise ConvergeError("--max-wait-ms must be at least 0, --timeout-ms above 0 and --log-sample in (0, 1]")
    if options.log_requests is not None:
        try:
            options.log_requests.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConvergeError(f"--log-requests {options.log_requests}: cannot create it "
                                f"({error.strerror})") from error
    models = {name: ServedModel.load(name, path, options.format, options.threads, options.drift_window)
              for name, path in named_bundles(options.bundles).items()}
    listening = bind(options.host, options.port)
    settings = Settings(options.max_batch_size, options.max_wait_ms, options.max_queue, options.timeout_ms,
                        options.log_requests, options.log_sample)
    server = Server(models, settings)
    host, port = listening.getsockname()[:2]
    print(f"converge serve: {', '.join(models)} on http://{host}:{port}", file=sys.stderr, flush=True)
    run(server, listening)
    return 0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before serving, so a port in use is a user error and not a traceback."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        raise ConvergeError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                            f"is another server using it? choose another --port") from error
    listening.listen(2048)
    return listening


def run(server: Server, listening: socket.socket) -> None:
    import uvicorn

    # No access log and no use of the client's address: uvicorn's X-Forwarded-For rewriting would be work for nothing.
    config = uvicorn.Config(server, log_level="warning", access_log=False, proxy_headers=False, lifespan="on",
                            timeout_graceful_shutdown=None)
    # uvicorn re-raises the signal that stopped it once it is done; this handler takes it, so a graceful stop
    # exits 0 instead of dying of the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(config).run(sockets=[listening])
