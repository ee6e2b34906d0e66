"""Shared fixtures: one real embedded PostgreSQL per test run, a fresh database per test, the real encoder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from lvm_pipeline.db.server import EmbeddedPostgres

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def own_server(prefix: str, **start) -> Iterator[EmbeddedPostgres]:
    """A started embedded server in a fresh folder, stopped and removed afterwards (`start`: EmbeddedPostgres.start's)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))  # not pytest's tmp dir: that is 0700 (the server user must reach it)
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    try:
        server.start(**start)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    with own_server("lvm-pg-") as server:
        yield server


def _fresh_database(server: EmbeddedPostgres) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(server.url("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    return server.url(name)


@pytest.fixture
def database_url(pg_server, monkeypatch, tmp_path) -> str:
    """A new empty database; the environment points the whole pipeline at it and at tmp_path."""
    url = _fresh_database(pg_server)
    monkeypatch.setenv("LVM_DATABASE_URL", url)
    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "landing").mkdir(parents=True)
    return url


@pytest.fixture
def conn(database_url):
    from lvm_pipeline import db

    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def dagster_instance(pg_server, monkeypatch, tmp_path):
    """A real Dagster instance from this project's dagster.yaml, its storage a fresh PostgreSQL database.

    The environment points at it, so the CLI's `DagsterInstance.get()` finds the same instance.
    """
    from dagster import DagsterInstance

    url = _fresh_database(pg_server).replace("postgresql://", "postgresql+psycopg2://", 1)
    monkeypatch.setenv("DAGSTER_HOME", str(PROJECT_ROOT))
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    monkeypatch.setenv("LVM_DAGSTER_DIR", str(tmp_path / "dagster"))
    instance = DagsterInstance.get()
    yield instance
    instance.dispose()


@pytest.fixture(scope="session")
def encoder():
    from lvm_pipeline.encoders import SentenceEncoder

    return SentenceEncoder()


@pytest.fixture(scope="session")
def vital_records():
    """60 real demo-corpus records spread over the whole corpus, so over its topics."""
    from lvm_pipeline.sources.vital_articles import load_vital_articles

    records = load_vital_articles()
    return records[:: len(records) // 60][:60]


def landing_dir() -> Path:
    """The landing folder of the test's LVM_DATA_DIR (see the database_url fixture)."""
    return Path(os.environ["LVM_DATA_DIR"]) / "landing"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def other_encoder_dir(path: Path) -> Path:
    """A real, different encoder saved at `path`: the packaged MiniLM with a 64-D projection head."""
    from sentence_transformers import SentenceTransformer, models

    from lvm_pipeline.encoders import resolve_model

    base = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    head = models.Dense(in_features=base.get_embedding_dimension(), out_features=64)
    SentenceTransformer(modules=[*base, head], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, encoder, vital_records):
    """A data folder as the pipeline leaves it: a bank of real sentences, a trained gru and a benchmark report."""
    from lvm_pipeline.datasets.bank import write_bank
    from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
    from lvm_pipeline.evaluation.benchmark import run_benchmark
    from lvm_pipeline.evaluation.report import write_report
    from lvm_pipeline.models.predictor import ModelPredictor
    from lvm_pipeline.segmentation import segment
    from lvm_pipeline.training import TrainConfig, train
    from lvm_pipeline.training.checkpoint import load_checkpoint
    from lvm_pipeline.training.runs import set_current

    data = tmp_path_factory.mktemp("data")
    concepts = [(r["id"], seq, chunk.text) for r in vital_records
                for seq, chunk in enumerate(segment(r["text"], "sentence"))]
    articles, seqs, texts = (list(column) for column in zip(*concepts))
    bank = write_bank(data / "exports", encoder.encode(texts), {
        "cpe_id": [f"c{i}" for i in range(len(texts))], "batch_id": ["b"] * len(texts), "article_id": articles,
        "seq_in_article": seqs, "concept_text": texts, "tmd_bits": [-1] * len(texts)},
        encoder_fingerprint=encoder.fingerprint)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=8))
    run_dir = data / "checkpoints" / "gru" / "run1"
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, max_len=8, patience=None, num_threads=1)
    result = train("toy_gru", sequences, run_dir, config, model_name="gru", progress=False)
    set_current(run_dir)
    model, _ = load_checkpoint(result.best_checkpoint)
    benchmark = run_benchmark(sequences, [ModelPredictor(model, "gru")], n_resamples=50)
    write_report(benchmark, bank.texts, data / "reports")
    return data


@pytest.fixture
def one_thread():
    """torch on one thread for the test (toy models run several times faster than on two contended cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
