"""Load testing the HTTP service: `served` (a `serve` subprocess), `run_load` (an open-loop load generator) and
the request bodies and metrics the benchmark (`benchmarks/serve.py`) reads.

`run_load` schedules the i-th request at start + i/rate whatever the answers do, and measures each latency from
that scheduled time: a request that waits for a free connection counts its wait (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import gc
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
        """The server's peak resident memory so far (VmHWM), in MiB: summed over its process group (uvicorn's
        worker processes with --workers), so an upper bound when several peak at different times."""
        return sum(_peak_rss_kb(pid) for pid in _group(self.pid)) / 1024

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _group(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    pids = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _peak_rss_kb(pid: int) -> int:
    with suppress(OSError, StopIteration):
        status = (Path("/proc") / str(pid) / "status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return 0


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(url: str, path: str, body: bytes, timeout_s: float = 30.0) -> int:
    """The status of one JSON POST to the server (a health probe, not load)."""
    request = urllib.request.Request(f"{url}{path}", data=body, headers={"Content-Type": "application/json"})
    try:
        with _DIRECT.open(request, timeout=timeout_s) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


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
def scrape(url: str) -> dict:
    """The server's `/metrics`: metric families (prometheus_client's `Metric`) by name."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = _get(f"{url}/metrics")
    if status != 200:
        raise PipelineError(f"GET {url}/metrics answered {status}")
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def histogram_totals(url: str, name: str, **labels: str) -> tuple[float, float]:
    """(sum, count) of the histogram `name` on the server's `/metrics`, over its series matching `labels`."""
    return _totals(scrape(url).get(name), name, labels)


def _totals(family, name: str, labels: dict[str, str]) -> tuple[float, float]:
    totals = {"_sum": 0.0, "_count": 0.0}
    for sample in family.samples if family else ():
        suffix = sample.name.removeprefix(name)
        if suffix in totals and all(sample.labels.get(k) == v for k, v in labels.items()):
            totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


def worker_totals(url: str, name: str, workers: int = 1, max_scrapes: int = 100, **labels: str
                  ) -> dict[str, tuple[float, float]]:
    """`histogram_totals` per worker process (its pid, from `lvm_model_info`): with `serve --workers N` each
    process counts its own and a scrape reaches any one, so this scrapes until `workers` of them answered."""
    found: dict[str, tuple[float, float]] = {}
    for _ in range(max_scrapes):
        families = scrape(url)
        info = families.get("lvm_model_info") or families.get("lvm_model")  # the text format calls it a gauge
        pid = next((sample.labels.get("pid", "") for sample in info.samples), "") if info else ""
        found[pid] = _totals(families.get(name), name, labels)
        if len(found) >= workers:
            break
    return found


def mean_batch_size(url: str, kind: str = "next", since: dict[str, tuple[float, float]] | None = None,
                    workers: int = 1) -> float | None:
    """Requests per batched call of `kind` (the `lvm_batch_size` histogram) over every worker, since the
    `worker_totals` given."""
    now, since = worker_totals(url, "lvm_batch_size", workers, kind=kind), since or {}
    total = sum(s - since.get(pid, (0.0, 0.0))[0] for pid, (s, _) in now.items())
    batches = sum(c - since.get(pid, (0.0, 0.0))[1] for pid, (_, c) in now.items())
    return total / batches if batches else None


# -- request bodies ---------------------------------------------------------------------------
def _starts(rows: int, n: int, context: int, seed: int) -> np.ndarray:
    if rows < context:
        raise ValueError(f"a context of {context} needs at least {context} rows, not {rows}")
    return np.random.default_rng(seed).integers(0, rows - context + 1, size=n)


def vector_bodies(vectors: np.ndarray, n: int, context: int = 5, k: int = 5, seed: int = 0,
                  views: np.ndarray | None = None) -> list[bytes]:
    """`n` `/v1/next` bodies, each a context of `context` consecutive rows of `vectors` (numbers to 6 significant
    digits, to keep the bodies small), with the same rows of `views` (bank-aligned, for a text-view model) if given."""
    bodies = []
    for start in _starts(len(vectors), n, context, seed):
        rows = slice(start, start + context)
        fields = [("vectors", vectors[rows])] + ([("views", views[rows])] if views is not None else [])
        body = ",".join(f'"{name}":[{_json_rows(matrix)}]' for name, matrix in fields)
        bodies.append(f'{{{body},"k":{k}}}'.encode())
    return bodies


def _json_rows(matrix: np.ndarray) -> str:
    return ",".join("[" + ",".join(map("{:.6g}".format, row.tolist())) + "]" for row in matrix)


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
    The objects already alive are frozen out of the garbage collector meanwhile (`gc.freeze`): a full collection
    of a large caller's heap (a loaded encoder: ~0.3 s) would stall the generator and count as latency.
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
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(load.run())
    finally:
        gc.unfreeze()


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
        # times from time.perf_counter: uvloop's loop.time() counts whole milliseconds
        self.end = time.perf_counter() + self.duration + self.timeout  # nothing runs past it
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        connected = await asyncio.gather(*(self._connect(min(self.end, time.perf_counter() + 1.0))
                                           for _ in range(min(self.connections, self.n))))
        start = self.last_answer = time.perf_counter()
        workers = [asyncio.create_task(self._worker(queue, c)) for c in connected]
        try:
            async with asyncio.timeout(self.end + 1.0 - time.perf_counter()):  # a safety net: each step has its own
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
        i = 0
        while i < self.n:
            due_now = min(self.n, math.floor((time.perf_counter() - start) * self.rate) + 1)
            for j in range(i, due_now):
                queue.put_nowait((j, start + j / self.rate))
            i = max(i, due_now)
            if i < self.n:
                await asyncio.sleep(max(0.0, start + i / self.rate - time.perf_counter()))

    async def _connect(self, deadline: float):
        with suppress(OSError, TimeoutError):
            async with asyncio.timeout(deadline - time.perf_counter()):
                return await asyncio.open_connection(self.host, self.port)
        return None

    async def _worker(self, queue: asyncio.Queue, connection) -> None:
        while (item := await queue.get()) is not None:
            index, due = item
            now = time.perf_counter()
            if now >= self.end:
                continue  # counted as unsent
            status = None
            try:
                async with asyncio.timeout(min(self.end, max(due, now) + self.timeout) - now):
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
            now = self.last_answer = time.perf_counter()
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
