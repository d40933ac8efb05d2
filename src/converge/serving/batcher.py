"""Dynamic batching: the requests waiting for one model are coalesced into one onnxruntime call.

A worker per model takes what waits, up to `max_rows` rows, once the oldest waiting request has waited
`max_wait` seconds or the rows fill a batch, and runs the model in a thread of its own (onnxruntime releases the
GIL), so the event loop keeps accepting while the model runs. A model whose whole batch takes less than
`INLINE_BELOW` runs in the event loop instead: handing it to a thread and back would cost more than the call.
Under load, requests pile up while a batch runs and the next batch leaves at once; alone, a request waits at
most `max_wait`.

By default (`max_wait=None`) a model run in a thread waits for nobody: what arrives while a batch runs makes
the next batch, so batches grow with the load (Triton's default). A model run in the event loop waits
`INLINE_WAIT`: its batch is over before the next request is read, so without a wait every batch would be one
request, and a batch's fixed cost (the onnxruntime call, collating, the drift window) would be paid by each.

The queue is bounded (`max_queue` requests waiting): past it `submit` raises `Overloaded` at once. A request
whose caller gave up (its deadline passed, its client left) is cancelled: it leaves the queue, and if its batch
already runs its answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from converge.runtime.processing import Request

INLINE_BELOW = 0.0005  # seconds; a thread handoff (and the GIL back) costs 50-100 us a batch, more under load
# Rotten Tomatoes (fastText) at 2,600 req/s: p50 28 ms with no wait (batches of one), 4 ms waiting 2 ms
INLINE_WAIT = 0.002


class Overloaded(Exception):
    """The model's queue is full: the request is refused at once (503 with Retry-After)."""


@dataclass
class Pending:
    requests: list[Request]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return sum(request.rows for request in self.requests)


class Batcher:
    """Args:
        run: answers a list of requests (called in the worker thread, or in the event loop for a cheap model).
        max_rows: rows per model call (a single larger request runs alone).
        max_wait: seconds the oldest waiting request may wait for others; None: 0 in a thread, `INLINE_WAIT`
            in the event loop (see above).
        max_queue: requests allowed to wait.
        on_batch: called with each batch's row count (metrics).
        batch_seconds: what a full batch costs `run` (a measurement, or an estimate): under `INLINE_BELOW` it
            runs in the event loop.
    """

    def __init__(self, run: Callable[[list[Request]], list[Any]], max_rows: int, max_wait: float | None,
                 max_queue: int, on_batch: Callable[[int], None] = lambda rows: None,
                 batch_seconds: float = INLINE_BELOW) -> None:
        self.run, self.max_rows, self.max_queue = run, max_rows, max_queue
        self.on_batch = on_batch
        self.inline = batch_seconds < INLINE_BELOW
        self.max_wait = max_wait if max_wait is not None else INLINE_WAIT if self.inline else 0.0
        self.waiting: deque[Pending] = deque()
        self.rows_waiting = 0
        # Set by a request that starts a batch or fills one: the worker wakes twice a batch, not once a request.
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="converge-model")
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Cancel the worker (the server calls this once every accepted request has its answer)."""
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def submit(self, requests: list[Request]) -> asyncio.Future:
        """Queue one HTTP request's requests; the future gets their answers, in order.

        Raises:
            Overloaded: `max_queue` requests are already waiting.
        """
        if len(self.waiting) >= self.max_queue:
            raise Overloaded
        pending = Pending(requests, asyncio.get_running_loop().create_future())
        pending.future.add_done_callback(lambda future: self._forget(pending) if future.cancelled() else None)
        self.waiting.append(pending)
        self.rows_waiting += pending.rows
        if len(self.waiting) == 1 or self.rows_waiting >= self.max_rows:
            self._wake.set()
        return pending.future

    def _forget(self, pending: Pending) -> None:
        # A cancelled request leaves no work behind; one already in a running batch has its answer dropped.
        with contextlib.suppress(ValueError):
            self.waiting.remove(pending)
            self.rows_waiting -= pending.rows

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            requests = [request for pending in batch for request in pending.requests]
            self.on_batch(sum(request.rows for request in requests))
            try:
                answers = self.run(requests) if self.inline else await loop.run_in_executor(self._executor,
                                                                                          self.run, requests)
            except Exception as error:  # a bug in a processor: every request of the batch gets it, the worker lives
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            start = 0
            for pending in batch:
                if not pending.future.done():  # else its caller gave up while the batch ran
                    pending.future.set_result(answers[start:start + len(pending.requests)])
                start += len(pending.requests)

    async def _fill(self) -> None:
        """Wait for a first request, then until the batch is full or the oldest has waited max_wait."""
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            remaining = self.waiting[0].arrived + self.max_wait - time.monotonic()
            if remaining <= 0 or self.rows_waiting >= self.max_rows:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _take(self) -> list[Pending]:
        """The oldest waiting requests up to max_rows rows (at least one), skipping any cancelled a moment ago."""
        batch: list[Pending] = []
        rows = 0
        while self.waiting and (not batch or rows + self.waiting[0].rows <= self.max_rows):
            pending = self.waiting.popleft()
            self.rows_waiting -= pending.rows
            if not pending.future.done():
                batch.append(pending)
                rows += pending.rows
        return batch
