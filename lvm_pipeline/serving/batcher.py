"""A dynamic batcher: requests from many callers queued and run together by one worker thread.

The worker takes the first waiting request, then waits at most `max_wait_ms` more for others (at most
`max_batch` in all), groups them by kind and makes one call of that kind's handler per group. The queue is
bounded: `submit` on a full queue raises `QueueFullError` at once. The model and FAISS release the GIL, so
the event loop keeps accepting requests while a batch runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often an idle worker looks at the stop flag
STOP_SECONDS = 10.0  # how long `stop` waits for the batch in progress

Handler = Callable[[Sequence[Any]], Sequence[Any]]  # one result per item, in order


class QueueFullError(RuntimeError):
    """The batcher's queue is full: try again later."""


class BatcherStoppedError(RuntimeError):
    """The batcher is stopped (or stopping): it takes no more work."""


@dataclass(frozen=True)
class Batched:
    """An item's result, with the seconds it waited in the queue and the size of the batch it ran in."""

    result: Any
    queued_s: float
    batch_size: int


@dataclass
class _Request:
    kind: str
    item: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """`submit(kind, item)` -> a Future of `Batched`; `handlers[kind]` answers a batch of items of that kind.

    `on_batch(kind, size, seconds)` is called after each handler call (for metrics).
    """

    def __init__(self, handlers: dict[str, Handler], *, max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[str, int, float], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms >= 0")
        self.handlers, self.max_batch, self.max_wait_s = dict(handlers), max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue[_Request] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch in progress)."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="lvm-batcher", daemon=True)
            self._worker.start()

    def submit(self, kind: str, item: Any) -> Future:
        if kind not in self.handlers:
            raise ValueError(f"no handler for {kind!r}")
        if self._stopping.is_set():
            raise BatcherStoppedError("the batcher is stopped")
        request = _Request(kind, item)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFullError(f"the queue is full ({self._queue.maxsize} requests waiting)") from None
        return request.future

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Finish the batch in progress (waiting at most `timeout`), then fail what is still queued."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout)
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            request.future.set_exception(BatcherStoppedError("the batcher stopped before this request ran"))

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._collect()
            if batch:
                self._answer(batch)

    def _collect(self) -> list[_Request]:
        """The first waiting request (an idle poll of POLL_SECONDS), then those that come within max_wait."""
        try:
            batch = [self._queue.get(timeout=POLL_SECONDS)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _answer(self, batch: list[_Request]) -> None:
        groups: dict[str, list[_Request]] = {}
        for request in batch:
            groups.setdefault(request.kind, []).append(request)
        for kind, requests in groups.items():
            started = time.perf_counter()
            live = [r for r in requests if r.future.set_running_or_notify_cancel()]  # a cancelled caller left
            if not live:
                continue
            try:
                results = self.handlers[kind]([r.item for r in live])
                if len(results) != len(live):
                    raise RuntimeError(f"the {kind} handler gave {len(results)} results for {len(live)} items")
            except BaseException as error:  # every caller hears of it; the worker goes on
                log.debug("a %s batch of %d failed", kind, len(live), exc_info=True)
                for request in live:
                    request.future.set_exception(error)
                continue
            finally:
                if self.on_batch is not None:
                    self.on_batch(kind, len(live), time.perf_counter() - started)
            for request, result in zip(live, results):
                request.future.set_result(Batched(result, started - request.enqueued, len(live)))
