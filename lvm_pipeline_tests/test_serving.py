"""`lvm-pipeline serve`: the HTTP service in process (TestClient) and as a real uvicorn subprocess, on a trained toy
gru, a bank of real sentences and the real encoder (test_inference's data folder)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.inference import ContextQuery, NextConceptPredictor
from lvm_pipeline.serving.app import ServingSettings, create_app
from lvm_pipeline.serving.inputs import MAX_BODY_BYTES, MAX_SENTENCE_CHARS, MAX_SENTENCES

CONTEXT = ["The Moon orbits the Earth.", "It has no atmosphere."]
WAIT_S = 60.0


@pytest.fixture(scope="module")
def predictor(data_dir, encoder):
    return NextConceptPredictor(data_dir / "checkpoints" / "gru" / "run1" / "best.safetensors",
                                open_bank(data_dir / "exports"), encoder)


def ready_client(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    deadline = time.monotonic() + WAIT_S
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.01)
    return client


@pytest.fixture(scope="module")
def client(predictor):
    client = ready_client(create_app(predictor, ServingSettings(max_batch=64, max_wait_ms=20)))
    yield client
    client.__exit__(None, None, None)


def test_texts_answer_as_the_predictor_does_and_vectors_in_works(client, predictor, encoder):
    expected = predictor(CONTEXT, k=3)
    response = client.post("/v1/next", json={"texts": CONTEXT, "k": 3})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [n["text"] for n in answer["neighbours"]] == [n.text for n in expected.neighbours]
    assert answer["model"] == "gru" and answer["bank_version"] == predictor.bank.version
    assert set(answer["latency_ms"]) == {"encode", "model", "search", "queue", "total"}
    top = answer["neighbours"][0]
    assert predictor.bank.texts[top["row"]] == top["text"] and top["concept_id"] == f"c{top['row']}"
    assert top["score"] == pytest.approx(expected.neighbours[0].score, abs=1e-4)

    by_vectors = client.post("/v1/next", json={"vectors": encoder.encode(CONTEXT).tolist(), "k": 3}).json()
    assert [n["text"] for n in by_vectors["neighbours"]] == [n.text for n in expected.neighbours]

    first = predictor.bank.texts[0]
    search = client.post("/v1/search", json={"texts": [first]}).json()
    assert search["model"] == "vector_search" and search["neighbours"][0]["text"] == first
    without = client.post("/v1/search", json={"texts": [first], "exclude_context": True, "k": 5}).json()
    assert len(without["neighbours"]) == 5 and first not in [n["text"] for n in without["neighbours"]]


def bad_requests():
    dim = 384
    return {
        "empty texts": (422, {"texts": []}),
        "blank texts": (422, {"texts": ["  "]}),
        "both": (422, {"texts": ["a"], "vectors": [[0.0] * dim]}),
        "neither": (422, {"k": 3}),
        "too many sentences": (422, {"texts": ["a."] * (MAX_SENTENCES + 1)}),
        "long sentence": (422, {"texts": ["a" * (MAX_SENTENCE_CHARS + 1)]}),
        "wrong dimension": (422, {"vectors": [[0.1] * (dim - 1)]}),
        "empty vectors": (422, {"vectors": []}),
        "unknown field": (422, {"texts": ["a"], "colour": "red"}),
        "k zero": (422, {"texts": ["a"], "k": 0}),
        "k over the cap": (422, {"texts": ["a"], "k": 101}),
        "texts not strings": (422, {"texts": [1, 2]}),
        "not an object": (422, ["a"]),
    }


@pytest.mark.parametrize("name", list(bad_requests()))
def test_bad_json_input_is_a_4xx_with_a_reason(client, name):
    status, body = bad_requests()[name]
    response = client.post("/v1/next", json=body)
    assert response.status_code == status and response.json()["error"], response.text


@pytest.mark.parametrize("content, headers, status", [
    (b'{"vectors": [[NaN' + b", 0.0" * 383 + b"]]}", {}, 422),
    (b'{"vectors": [[1e999' + b", 0.0" * 383 + b"]]}", {}, 422),
    (b'{"texts": ["\xff\xfe"]}', {}, 400),
    (b'{"texts": [', {}, 400),
    (b"", {}, 400),
    (b"x" * (MAX_BODY_BYTES + 1), {}, 413),
    (b'{"texts": ["a"]}', {"content-length": str(MAX_BODY_BYTES + 1)}, 413),
], ids=["nan", "inf", "not utf-8", "not json", "no body", "over the cap", "content-length over the cap"])
def test_bad_bytes_are_a_4xx_with_a_reason(client, content, headers, status):
    if "content-length" in headers:  # a client lying about the length: send the raw request ourselves
        with client.stream("POST", "/v1/next", content=iter([content]), headers=headers) as response:
            assert response.status_code == status
            assert json.loads(response.read())["error"]
        return
    response = client.post("/v1/search", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status and response.json()["error"], response.text


def test_the_token_is_wanted_on_every_route_but_health(predictor):
    client = ready_client(create_app(predictor, ServingSettings(token="s3cret")))
    try:
        assert client.post("/v1/next", json={"texts": CONTEXT}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/next", json={"texts": CONTEXT}, headers=good).status_code == 200
        assert client.get("/metrics", headers=good).status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_readyz_says_503_until_the_model_is_loaded(predictor):
    loaded = threading.Event()

    def load():
        assert loaded.wait(WAIT_S)
        return predictor

    with TestClient(create_app(load)) as client:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and "loading" in not_ready.json()["error"]
        assert client.post("/v1/next", json={"texts": CONTEXT}).status_code == 503
        assert client.get("/healthz").status_code == 200
        loaded.set()
        deadline = time.monotonic() + WAIT_S
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_concurrent_requests_are_batched_and_answer_as_alone(client, predictor, vital_records):
    from lvm_pipeline.segmentation import segment

    contexts = [[c.text for c in segment(r["text"], "sentence")[:1 + i % 3]] for i, r in enumerate(vital_records[:32])]
    alone = [[n.text for n in predictor(context, k=3).neighbours] for context in contexts]
    barrier = threading.Barrier(len(contexts), timeout=WAIT_S)

    def ask(context):
        barrier.wait()
        return client.post("/v1/next", json={"texts": context, "k": 3}).json()

    with ThreadPoolExecutor(len(contexts)) as pool:
        answers = list(pool.map(ask, contexts, timeout=WAIT_S))
    assert [[n["text"] for n in a["neighbours"]] for a in answers] == alone
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    sizes = [s for s in families["lvm_batch_size"].samples if s.name == "lvm_batch_size_bucket"
             and s.labels["kind"] == "next"]
    single = next(s.value for s in sizes if s.labels["le"] == "1.0")
    total = next(s.value for s in sizes if s.labels["le"] == "+Inf")
    assert total > single, "no batch held more than one request"


def test_metrics_parse_and_name_every_stage(client):
    client.post("/v1/next", json={"texts": CONTEXT})
    client.post("/v1/next", json={"texts": []})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {"lvm_requests", "lvm_stage_latency_seconds", "lvm_batch_size", "lvm_queue_depth",
            "lvm_in_flight_requests", "lvm_model_info"} <= set(families)
    statuses = {(s.labels["route"], s.labels["status"]) for s in families["lvm_requests"].samples
                if s.name == "lvm_requests_total"}
    assert {("/v1/next", "200"), ("/v1/next", "422")} <= statuses
    stages = {s.labels["stage"] for s in families["lvm_stage_latency_seconds"].samples}
    assert stages == {"encode", "model", "search", "queue", "total"}
    info = families["lvm_model_info"].samples[0].labels
    assert info["model"] == "gru" and len(info["bank_version"]) == 16


class GatedPredictor(NextConceptPredictor):
    """The real predictor, whose batches wait for `gate` (so that a test can fill the queue behind one)."""

    def predict_batch(self, queries):
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        return super().predict_batch(queries)


def test_a_full_queue_answers_503_with_retry_after(predictor):
    gated = object.__new__(GatedPredictor)
    gated.__dict__.update(predictor.__dict__)
    gated.entered, gated.gate = threading.Event(), threading.Event()
    client = ready_client(create_app(gated, ServingSettings(max_batch=1, max_wait_ms=0, max_queue=1)))
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(client.post, "/v1/next", json={"texts": CONTEXT})
            assert gated.entered.wait(WAIT_S)  # the worker holds the first request
            queued = pool.submit(client.post, "/v1/next", json={"texts": CONTEXT})
            state = client.app.state.service
            deadline = time.monotonic() + WAIT_S
            while state.batcher.depth < 1:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            refused = client.post("/v1/next", json={"texts": CONTEXT})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "full" in refused.json()["error"]
            gated.gate.set()
            assert running.result(WAIT_S).status_code == 200 and queued.result(WAIT_S).status_code == 200
    finally:
        gated.gate.set()
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_answers_and_stops_on_sigterm(data_dir):
    port = free_port()
    env = {**os.environ, "LVM_DATA_DIR": str(data_dir), "LVM_API_TOKEN": ""}
    server = subprocess.Popen([sys.executable, "-m", "lvm_pipeline.cli", "serve", "--port", str(port), "--family",
                               "gru"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "serve never became ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        answer = httpx.post(f"{base}/v1/next", json={"texts": CONTEXT, "k": 2}, timeout=10).json()
        assert answer["model"] == "gru" and len(answer["neighbours"]) == 2
        assert not math.isnan(answer["neighbours"][0]["score"])
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then re-raises the signal it caught: the exit status says SIGTERM
        assert server.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        server.stdout.close()


def test_the_predictor_batches_contexts_of_any_length_as_it_answers_one(predictor, encoder):
    contexts = [CONTEXT, CONTEXT[:1], ["Paris is the capital of France.", "It lies on the Seine.", "It is old."]]
    batched = predictor.predict_batch([ContextQuery.of_texts(c, k=4) for c in contexts]
                                      + [ContextQuery(vectors=encoder.encode(contexts[2]), k=4)])
    for context, answer in zip([*contexts, contexts[2]], batched):
        alone = predictor(context, k=4)
        assert [n.text for n in answer.neighbours] == [n.text for n in alone.neighbours]
        np.testing.assert_allclose([n.score for n in answer.neighbours], [n.score for n in alone.neighbours],
                                   atol=1e-4)
    assert set(batched[0].latency_ms) == {"encode", "predict", "decode", "total"}


@pytest.fixture(scope="module")
def text_view_predictor(data_dir, encoder, tmp_path_factory):
    """A text-view gru (toy_gru_text, its gate open) saved as a checkpoint of the data folder's bank."""
    from lvm_pipeline.models.base import build_model
    from lvm_pipeline.training.checkpoint import read_sidecar, save_checkpoint

    sidecar = read_sidecar(data_dir / "checkpoints" / "gru" / "run1" / "best.json")
    torch.manual_seed(0)
    model = build_model("toy_gru_text", int(sidecar["d_input"]))
    model.view_gate.data.fill_(0.5)
    directory = tmp_path_factory.mktemp("text_view")
    path = save_checkpoint(directory, model, sidecar | {"model_config": model.config.to_dict(), "model_name": "gru_text"},
                           name="best")
    return NextConceptPredictor(path, open_bank(data_dir / "exports"), encoder)


def test_a_text_view_model_takes_vectors_with_their_views_and_answers_as_from_the_texts(text_view_predictor):
    client = ready_client(create_app(text_view_predictor))
    try:
        vectors = client.post("/v1/next", json={"vectors": text_view_predictor.encoder.encode(CONTEXT).tolist()})
        assert vectors.status_code == 422 and "views" in vectors.json()["error"]
        contexts, views = text_view_predictor._encode_contexts([ContextQuery.of_texts(CONTEXT)], with_views=True)
        assert not np.allclose(views[0], contexts[0])  # the second position's view reads both sentences
        from_texts = client.post("/v1/next", json={"texts": CONTEXT, "k": 4}).json()
        from_vectors = client.post("/v1/next", json={"vectors": contexts[0].tolist(), "views": views[0].tolist(),
                                                     "k": 4})
        assert from_vectors.status_code == 200, from_vectors.text
        assert [n["row"] for n in from_vectors.json()["neighbours"]] == [n["row"] for n in from_texts["neighbours"]]
        one_view_short = client.post("/v1/next", json={"vectors": contexts[0].tolist(), "views": views[0][:1].tolist()})
        assert one_view_short.status_code == 422 and "one view per vector" in one_view_short.json()["error"]
        views_with_texts = client.post("/v1/next", json={"texts": CONTEXT, "views": views[0].tolist()})
        assert views_with_texts.status_code == 422
    finally:
        client.__exit__(None, None, None)


def test_exclude_context_drops_the_context_sentences_from_the_next_concepts(client, predictor):
    contexts = [[str(text)] for text in predictor.bank.texts[:200]]
    answers = predictor.predict_batch([ContextQuery.of_texts(c, k=10) for c in contexts])
    echoing = [c for c, a in zip(contexts, answers) if c[0] in [n.text for n in a.neighbours]]
    assert echoing, "no context among its own next concepts: nothing to exclude"
    context = echoing[0]
    kept = client.post("/v1/next", json={"texts": context, "k": 10}).json()["neighbours"]
    assert context[0] in [n["text"] for n in kept]
    dropped = client.post("/v1/next", json={"texts": context, "k": 10, "exclude_context": True}).json()["neighbours"]
    assert len(dropped) == 10 and context[0] not in [n["text"] for n in dropped]


def test_an_unexpected_error_is_a_500_whose_error_id_the_log_carries(predictor, caplog):
    working = predictor

    class Broken:
        dimension, needs_texts, bank = working.dimension, False, working.bank
        predictor, checkpoint, encoder, backend = working.predictor, working.checkpoint, working.encoder, "torch"
        search = "exact"

        def predict_batch(self, queries):
            raise RuntimeError("a bug in the model code")

    client = ready_client(create_app(Broken, ServingSettings(max_wait_ms=1)))
    try:
        with caplog.at_level("ERROR"):
            response = client.post("/v1/next", json={"texts": CONTEXT})
        assert response.status_code == 500
        error_id = response.json()["error_id"]
        assert response.json()["error"] == "internal error" and "a bug" not in response.text
        assert any(error_id in record.getMessage() for record in caplog.records)
        assert client.post("/v1/search", json={"texts": CONTEXT}).status_code == 500  # search is broken too (Broken)
    finally:
        client.__exit__(None, None, None)
