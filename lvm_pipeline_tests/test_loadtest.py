"""The open-loop load generator (`lvm_pipeline.serving.loadtest`) against small servers built here: a Starlette app
on uvicorn in a thread (known delays, 503s, a histogram on /metrics), a socket that accepts and never answers, and a
port nobody listens on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.serving.loadtest import (
    Served,
    free_port,
    histogram_totals,
    mean_batch_size,
    run_load,
    served,
    text_bodies,
    vector_bodies,
    worker_totals,
)

DELAY_S = 0.02


def make_app() -> Starlette:
    registry = CollectorRegistry()
    sizes = Histogram("lvm_batch_size", "batch sizes", ["kind"], buckets=(1, 2, 4, 8), registry=registry)
    for size in (2, 4):
        sizes.labels("next").observe(size)
    sizes.labels("search").observe(8)

    async def sleep(request: Request) -> Response:
        await request.body()
        await asyncio.sleep(float(request.path_params["ms"]) / 1000)
        return Response(b'{"ok": true}', media_type="application/json")

    async def status(request: Request) -> Response:
        return Response(b"{}", status_code=503 if b"fail" in await request.body() else 200)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry))

    return Starlette(routes=[Route("/sleep/{ms}", sleep, methods=["POST"]), Route("/status", status, methods=["POST"]),
                             Route("/metrics", metrics)])


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` on uvicorn in a thread, on a free loopback port: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server never started"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def url():
    with serving(make_app()) as base:
        yield base


def test_sends_rate_times_duration_and_latencies_include_the_delay(url):
    started = time.monotonic()
    result = run_load(url, f"/sleep/{DELAY_S * 1000:g}", [b'{"a": 1}'], rate_qps=50, duration_s=2.0)
    wall = time.monotonic() - started
    assert result.scheduled == result.sent == result.ok == 100 and result.errors == {}
    assert DELAY_S * 1000 <= result.p50_ms <= result.p99_ms <= result.max_ms < 500
    assert 2.0 <= result.duration_s < 2.5 and wall < 3.5
    assert result.achieved_qps == pytest.approx(50, rel=0.1)
    assert json.loads(json.dumps(result.to_dict()))["ok"] == 100


def test_errors_are_counted_by_status(url):
    result = run_load(url, "/status", [b'{"x": "ok"}', b'{"x": "fail"}', b'{"x": "fail"}'], rate_qps=90,
                      duration_s=1.0)
    assert result.sent == 90 and result.ok == 30 and result.errors == {"503": 60}
    missing = run_load(url, "/nowhere", [b"{}"], rate_qps=20, duration_s=0.5)
    assert missing.ok == 0 and missing.errors == {"404": 10} and missing.p99_ms is None


def test_the_run_ends_by_duration_plus_timeout_when_the_server_never_answers():
    with socket.socket() as hanging:  # accepts (the kernel does) and never reads nor answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(128)
        port = hanging.getsockname()[1]
        started = time.monotonic()
        result = run_load(f"http://127.0.0.1:{port}", "/v1/next", [b"{}"], rate_qps=20, duration_s=1.0, timeout_s=1.0)
        wall = time.monotonic() - started
    assert wall < 2.5, f"the run took {wall:.2f} s"
    assert result.sent == 20 and result.ok == 0 and result.errors == {"timeout": 20}


def test_latency_counts_from_the_scheduled_time_not_the_send():
    """One connection, 200 ms answers, 20 requests/s: a closed loop would see 200 ms each; open loop, the i-th waits
    for the i before it, and its latency grows by about 150 ms a request. What is still queued at the end is unsent."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        result = run_load(f"http://127.0.0.1:{port}", "/sleep/200", [b"{}"], rate_qps=20, duration_s=1.0,
                          connections=1, timeout_s=1.0)
    finally:
        server.should_exit = True
        thread.join(10)
    assert 8 <= result.ok <= 10, result
    assert result.p50_ms > 500 and result.max_ms > 1000, result
    assert result.ok + sum(result.errors.values()) == result.scheduled == 20 and result.errors["unsent"] >= 9


def test_a_refused_connection_is_an_error_not_a_crash():
    result = run_load(f"http://127.0.0.1:{free_port()}", "/", [b"{}"], rate_qps=50, duration_s=0.2)
    assert result.ok == 0 and result.errors == {"connection": 10}


def test_histogram_totals_and_mean_batch_size(url):
    assert histogram_totals(url, "lvm_batch_size", kind="next") == (6.0, 2.0)
    assert histogram_totals(url, "lvm_batch_size") == (14.0, 3.0)
    assert mean_batch_size(url) == 3.0 and mean_batch_size(url, "search") == 8.0
    assert mean_batch_size(url, since={"": (2.0, 1.0)}) == 4.0 and mean_batch_size(url, since={"": (6.0, 2.0)}) is None


def test_the_mean_batch_size_of_several_workers_counts_each_once():
    """Two worker processes answer scrapes in turn (each its own pid and histogram): both are read, once each."""
    from prometheus_client import Info

    registries = []
    for pid, sizes in (("101", (2, 4)), ("202", (10,))):
        registry = CollectorRegistry()
        Info("lvm_model", "the model", registry=registry).info({"pid": pid})
        histogram = Histogram("lvm_batch_size", "sizes", ["kind"], buckets=(1, 8, 16), registry=registry)
        for size in sizes:
            histogram.labels("next").observe(size)
        registries.append(registry)
    turn = iter(range(10**6))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registries[next(turn) % 2]))

    with serving(Starlette(routes=[Route("/metrics", metrics)])) as url:
        totals = worker_totals(url, "lvm_batch_size", workers=2, kind="next")
        assert totals == {"101": (6.0, 2.0), "202": (10.0, 1.0)}
        assert mean_batch_size(url, workers=2) == 16 / 3
        assert mean_batch_size(url, workers=2, since={"101": (2.0, 1.0)}) == 14 / 2


def test_bodies_are_contexts_of_consecutive_rows():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    bodies = vector_bodies(vectors, n=20, context=5, k=3, seed=1)
    assert len(bodies) == 20
    for body in bodies:
        data = json.loads(body)
        got = np.asarray(data["vectors"], dtype=np.float32)
        start = int(np.flatnonzero(np.all(np.abs(vectors - got[0]) < 1e-4, axis=1))[0])
        np.testing.assert_allclose(got, vectors[start:start + 5], rtol=1e-5, atol=1e-7)
        assert data["k"] == 3
    texts = [f"Sentence {i}." for i in range(10)]
    for body in text_bodies(texts, n=5, context=3, k=2, seed=0):
        data = json.loads(body)
        first = texts.index(data["texts"][0])
        assert data == {"texts": texts[first:first + 3], "k": 2}
    with pytest.raises(ValueError):
        vector_bodies(vectors[:3], n=1, context=5)


def test_served_says_why_a_server_that_cannot_start_failed(tmp_path):
    with pytest.raises(PipelineError, match="exited with status") as failure:
        with served(["--family", "gru"], env={"LVM_DATA_DIR": str(tmp_path)}, ready_timeout_s=60):
            pass
    assert "gru" in str(failure.value)


def test_peak_rss_counts_the_whole_process_group(tmp_path):
    """A parent of ~0 MiB and its child of 200 MiB in their own group: the peak is the child's, at least."""
    child = "import time; b = bytearray(200 * 2**20); time.sleep(30)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    process = subprocess.Popen([sys.executable, "-c", parent], process_group=0)
    try:
        server = Served("http://127.0.0.1:1", process.pid, tmp_path / "log")
        deadline = time.monotonic() + 10
        while server.peak_rss_mb() < 200:
            assert time.monotonic() < deadline, f"peak {server.peak_rss_mb():.0f} MiB"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
