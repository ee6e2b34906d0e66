"""Load testing the HTTP service: `served` (a `serve` subprocess), `run_load` (an open-loop load generator) and
the request bodies and metrics the benchmark (`benchmarks/serve.py`) reads.

`run_load` schedules the i-th request at start + i/rate whatever the answers do, and measures each latency from
that scheduled time: a request that waits for a free connection counts its wait (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from lvm_pipeline.errors import PipelineError

STOP_GRACE_S = 15.0  # how long a served process has to exit after SIGTERM before SIGKILL
LOG_TAIL_LINES = 20
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the served process -------------------------------------------------------------------------
@dataclass(frozen=True)
class Served:
    """A running `lvm-pipeline serve`: its base URL, its pid and its log file."""

    url: str
    pid: int
    log: Path

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (VmHWM), in MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextmanager
def served(args: Sequence[str], env: dict[str, str] | None = None, ready_timeout_s: float = 180.0) -> Iterator[Served]:
    """`python -m lvm_pipeline.cli serve --host 127.0.0.1 --port <free> *args` in a process group of its own, once
    `/readyz` says 200; SIGTERM to the group afterwards (SIGKILL after STOP_GRACE_S).

    `env`: variables set over this process's environment. A server that exits or is not ready within
    `ready_timeout_s` is a `PipelineError` with the last lines of its log.
    """
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="lvm-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "lvm_pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, process_group=0)
    server = Served(f"http://127.0.0.1:{port}", process.pid, log)
    try:
        _wait_ready(server, process, ready_timeout_s)
        yield server
    finally:
        _stop(process)
        log.unlink(missing_ok=True)


def _wait_ready(server: Served, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise PipelineError(f"serve exited with status {process.returncode} before it was ready; its log ends:\n"
                                f"{server.log_tail()}")
        if time.monotonic() > deadline:
            raise PipelineError(f"serve was not ready within {timeout_s:g} s; its log ends:\n{server.log_tail()}")
        with suppress(OSError):
            if _get(f"{server.url}/readyz", timeout_s=2.0)[0] == 200:
                return
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- Prometheus -------------------------------------------------------------------------------
def histogram_totals(url: str, name: str, **labels: str) -> tuple[float, float]:
    """(sum, count) of the histogram `name` on the server's `/metrics`, over its series matching `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = _get(f"{url}/metrics")
    if status != 200:
        raise PipelineError(f"GET {url}/metrics answered {status}")
    totals = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples if family.name == name else ():
            suffix = sample.name.removeprefix(name)
            if suffix in totals and all(sample.labels.get(k) == v for k, v in labels.items()):
                totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


def mean_batch_size(url: str, kind: str = "next", since: tuple[float, float] = (0.0, 0.0)) -> float | None:
    """Requests per batched call of `kind` (the `lvm_batch_size` histogram), since the `histogram_totals` given."""
    total, count = histogram_totals(url, "lvm_batch_size", kind=kind)
    batches = count - since[1]
    return (total - since[0]) / batches if batches else None


# -- request bodies ---------------------------------------------------------------------------
def _starts(rows: int, n: int, context: int, seed: int) -> np.ndarray:
    if rows < context:
        raise ValueError(f"a context of {context} needs at least {context} rows, not {rows}")
    return np.random.default_rng(seed).integers(0, rows - context + 1, size=n)


def vector_bodies(vectors: np.ndarray, n: int, context: int = 5, k: int = 5, seed: int = 0) -> list[bytes]:
    """`n` `/v1/next` bodies, each a context of `context` consecutive rows of `vectors` (numbers to 6 significant
    digits, to keep the bodies small)."""
    bodies = []
    for start in _starts(len(vectors), n, context, seed):
        rows = ",".join("[" + ",".join(map("{:.6g}".format, row.tolist())) + "]" for row in vectors[start:start + context])
        bodies.append(f'{{"vectors":[{rows}],"k":{k}}}'.encode())
    return bodies


def text_bodies(texts: Sequence[str], n: int, context: int = 3, k: int = 5, seed: int = 0) -> list[bytes]:
    """`n` `/v1/next` bodies, each a context of `context` consecutive `texts`."""
    return [json.dumps({"texts": list(texts[start:start + context]), "k": k}).encode()
            for start in _starts(len(texts), n, context, seed)]


# -- the load generator -----------------------------------------------------------------------
@dataclass
class LoadResult:
    """What `run_load` measured. Latencies (of the 2xx answers) are from each request's scheduled send time.

    `scheduled` = `ok` + the sum of `errors`; `errors` counts by HTTP status ("503"), "timeout", "connection"
    (refused, reset, closed or unreadable) and "unsent" (no connection was free before the run's end).
    """

    target_qps: float
    duration_s: float  # from the first scheduled send to the last answer
    scheduled: int
    sent: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    achieved_qps: float = 0.0  # ok answers / duration_s
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_load(url: str, path: str, bodies: Sequence[bytes], rate_qps: float, duration_s: float,
             connections: int = 64, timeout_s: float = 5.0) -> LoadResult:
    """POST `bodies` (in turn) to `url` + `path` open-loop: round(rate_qps * duration_s) requests, the i-th due at
    start + i / rate_qps, over at most `connections` keep-alive HTTP/1.1 connections (one request at a time each).

    A request gets `timeout_s` from its send; the run ends by duration_s + timeout_s whatever the server does.
    """
    if rate_qps <= 0 or duration_s <= 0 or connections < 1 or not bodies:
        raise ValueError("rate_qps and duration_s must be > 0, connections >= 1, and bodies not empty")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\nContent-Length: "
    requests = [head.encode() + b"%d\r\n\r\n" % len(body) + body for body in bodies]
    load = _Load(host, port, requests, rate_qps, duration_s, connections, timeout_s)
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(load.run())


class _Load:
    def __init__(self, host: str, port: int, requests: list[bytes], rate: float, duration: float, connections: int,
                 timeout: float):
        self.host, self.port, self.requests = host, port, requests
        self.rate, self.duration, self.timeout = rate, duration, timeout
        self.n, self.connections = round(rate * duration), connections
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.end = self.last_answer = 0.0

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        self.end = loop.time() + self.duration + self.timeout  # nothing runs past it
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        connected = await asyncio.gather(*(self._connect(min(self.end, loop.time() + 1.0))
                                           for _ in range(min(self.connections, self.n))))
        start = self.last_answer = loop.time()
        workers = [asyncio.create_task(self._worker(queue, c)) for c in connected]
        try:
            async with asyncio.timeout_at(self.end + 1.0):  # a safety net: each step has its own deadline
                await self._schedule(queue, start)
                for _ in workers:
                    queue.put_nowait(None)
                await asyncio.gather(*workers)
        except TimeoutError:
            pass
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        done = len(self.latencies) + sum(self.errors.values())
        if done < self.n:  # still waiting in the queue when the run ended
            self.errors["unsent"] += self.n - done
        return self._result(self.last_answer - start)

    async def _schedule(self, queue: asyncio.Queue, start: float) -> None:
        loop, i = asyncio.get_running_loop(), 0
        while i < self.n:
            due_now = min(self.n, math.floor((loop.time() - start) * self.rate) + 1)
            for j in range(i, due_now):
                queue.put_nowait((j, start + j / self.rate))
            i = max(i, due_now)
            if i < self.n:
                await asyncio.sleep(max(0.0, start + i / self.rate - loop.time()))

    async def _connect(self, deadline: float):
        with suppress(OSError, TimeoutError):
            async with asyncio.timeout_at(deadline):
                return await asyncio.open_connection(self.host, self.port)
        return None

    async def _worker(self, queue: asyncio.Queue, connection) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            index, due = item
            if loop.time() >= self.end:
                continue  # counted as unsent
            status = None
            try:
                async with asyncio.timeout_at(min(self.end, max(due, loop.time()) + self.timeout)):
                    if connection is None:
                        connection = await asyncio.open_connection(self.host, self.port)
                    reader, writer = connection
                    writer.write(self.requests[index % len(self.requests)])
                    self.sent += 1
                    status, keep_alive = await _read_response(reader)
            except TimeoutError:
                self.errors["timeout"] += 1
            except (OSError, EOFError, ValueError):  # IncompleteReadError and LimitOverrunError among them
                self.errors["connection"] += 1
            now = self.last_answer = loop.time()
            if status is not None and 200 <= status < 300:
                self.latencies.append(now - due)
            elif status is not None:
                self.errors[str(status)] += 1
            if connection is not None and (status is None or not keep_alive):
                connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    def _result(self, duration: float) -> LoadResult:
        ms = np.asarray(self.latencies) * 1000
        p50, p95, p99 = (round(float(v), 3) for v in np.percentile(ms, [50, 95, 99])) if len(ms) else (None,) * 3
        return LoadResult(target_qps=self.rate, duration_s=round(duration, 3), scheduled=self.n, sent=self.sent,
                          ok=len(ms), errors=dict(sorted(self.errors.items())),
                          achieved_qps=round(len(ms) / duration, 2) if duration > 0 else 0.0, p50_ms=p50, p95_ms=p95,
                          p99_ms=p99, max_ms=round(float(ms.max()), 3) if len(ms) else None)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the connection stays open) of one HTTP/1.1 response, its body read and dropped."""
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    version, status = lines[0].split(b" ", 2)[:2]
    length, chunked, keep_alive = None, False, version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
            pass
    elif length is not None:
        await reader.readexactly(length)
    else:  # the body runs to the end of the connection
        await reader.read()
        keep_alive = False
    return int(status), keep_alive
