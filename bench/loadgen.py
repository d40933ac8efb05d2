"""A lean HTTP/1.1 load generator: POSTs of pre-built bodies over asyncio streams on uvloop.

The load generator shares the 2 cores with the server it measures, so every microsecond it spends is one the
server does not get: aiohttp took about as much CPU a request as the server itself. This client builds each
request's bytes once, reads a response by its Content-Length, and keeps what came back (status and body) to be
checked after the run, not during it. It speaks only what `converge serve` answers (no chunked bodies, no
redirects): a benchmark tool, not a general client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class Refused(Exception):
    """The server did not accept the connection: the request was never read."""


class Lost(Exception):
    """The connection closed after the request was sent, with no (whole) response."""


@dataclass
class Response:
    status: int
    body: bytes
    seconds: float  # from sending the request to the whole response read


@dataclass
class Client:
    """POSTs to one URL over kept-alive connections (at most `connections` at once), or a connection a request
    when `fresh_connections` (then a request the server has stopped accepting is refused at connect, never lost).

    Example::

        client = Client("http://127.0.0.1:8000/v1/models/digits/predict", connections=64)
        response = await client.post(b'{"pixels": [[...]]}')
    """

    url: str
    connections: int = 64
    fresh_connections: bool = False
    _idle: deque = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        close = b"Connection: close\r\n" if self.fresh_connections else b""
        self._head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                      .encode() + close + b"Content-Length: ")
        self._slots = asyncio.Semaphore(self.connections)

    async def post(self, body: bytes) -> Response:
        """Send one request and read its response.

        Raises:
            Refused: the connection was refused.
            Lost: the connection closed before the whole response came.
        """
        async with self._slots:
            reader, writer = await self._connection()
            started = time.perf_counter()
            try:
                writer.write(self._head + b"%d\r\n\r\n" % len(body) + body)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                response = Response(int(head[9:12]), await reader.readexactly(length),
                                    time.perf_counter() - started)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as error:
                writer.close()
                raise Lost from error
            if self.fresh_connections:
                writer.close()
            else:
                self._idle.append((reader, writer))
            return response

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.popleft()
            if not reader.at_eof():  # the server may have closed an idle connection
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as error:
            raise Refused from error

    def close(self) -> None:
        while self._idle:
            self._idle.popleft()[1].close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise Lost("a response without Content-Length")
