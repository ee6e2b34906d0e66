"""The embedded server, migrations, the binary vector COPY and the one-encoder rule, on a real PostgreSQL."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg2
import pytest

from lvm_pipeline.db import batches, bulk, encoders, migrations
from lvm_pipeline.db.server import EmbeddedPostgres
from lvm_pipeline.errors import EncoderMismatchError


def test_server_start_is_idempotent_and_stop_stops(tmp_path_factory):
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="lvm-pg-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    assert not server.status().running
    first = server.start(databases=("lvm",))
    again = server.start(databases=("lvm",))
    assert first.running and again.pid == first.pid
    with psycopg2.connect(server.url("lvm")) as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == ""  # unix socket only
    assert not server.stop().running
    assert server.start().running  # the data directory is kept between runs
    server.stop()


def test_migrations_are_recorded_and_idempotent(conn):
    assert migrations.migrate(conn) == []  # `conn` is already migrated
    with conn.cursor() as cur:
        cur.execute("SELECT version, name FROM schema_migration ORDER BY version")
        recorded = cur.fetchall()
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cur.fetchone() is not None
    assert [v for v, _ in recorded] == [m.version for m in migrations.available()]


def test_a_changed_migration_is_refused(conn):
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE schema_migration SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
        migrations.migrate(conn)


def _batch(cur, batch_id="b1"):
    batches.upsert_batch(cur, batch_id, f"/landing/{batch_id}", "0" * 64)


def test_binary_copy_round_trips_vectors_exactly(conn):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((257, 24)).astype(np.float32)
    ids = [uuid.uuid4() for _ in range(len(vectors))]
    with conn, conn.cursor() as cur:
        _batch(cur, "batch-ü")  # a non-ASCII batch id travels too
        encoder_id = encoders.register_encoder(cur, "toy", 24, "fp", vectors[0])
        assert bulk.copy_vectors(cur, [i.bytes for i in ids], "batch-ü", encoder_id, vectors) == 257
        cur.execute("SELECT cpe_id::text, batch_id, encoder_id, concept_vec::text FROM cpe_vector")
        rows = {r[0]: r for r in cur.fetchall()}
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'cpe_vector'::regclass AND attname = 'concept_vec'")
        assert cur.fetchone()[0] == "vector(24)"  # sized to the encoder's dimension
    for cpe_id, vector in zip(ids, vectors):
        _, batch_id, enc, text = rows[str(cpe_id)]
        assert batch_id == "batch-ü" and enc == encoder_id
        np.testing.assert_array_equal(np.array(text.strip("[]").split(","), dtype=np.float32), vector)


def test_a_second_encoder_is_refused(conn):
    probe = np.ones(8, dtype=np.float32)
    with conn, conn.cursor() as cur:
        first = encoders.register_encoder(cur, "a", 8, "fp-a", probe)
        # the same encoder under another name, with float noise: accepted as the same
        assert encoders.register_encoder(cur, "a-copy", 8, "fp-a2", probe + 1e-4) == first
        with pytest.raises(EncoderMismatchError, match="refusing to mix"):
            encoders.register_encoder(cur, "b", 8, "fp-b", np.arange(8, dtype=np.float32))
    with conn, conn.cursor() as cur:
        with pytest.raises(EncoderMismatchError, match=r"\(8-D"):
            encoders.register_encoder(cur, "c", 16, "fp-c", np.ones(16, dtype=np.float32))


def test_copy_rows_keeps_every_string_exactly_and_none_as_null(conn):
    tricky = ["", "tab\there", "line\nbreak\r\n", "back\\slash", "\\N", '"quoted", comma', "Ünïcødé 漢字 🙂"]
    with conn, conn.cursor() as cur:
        _batch(cur)
        bulk.copy_rows(cur, "quarantine", ("batch_id", "locator", "article_id", "reason", "raw_excerpt"),
                        [("b1", f"line {i}", None, "r", text) for i, text in enumerate(tricky)])
        bulk.copy_rows(cur, "article", ("article_id", "batch_id", "ord", "title", "text", "url", "metadata"),
                        [("a1", "b1", 0, "T", "x", None, {"topic": "Arts\tand\ncrafts", "n": 1})])
        cur.execute("SELECT raw_excerpt, article_id FROM quarantine ORDER BY quarantine_id")
        assert cur.fetchall() == [(text, None) for text in tricky]
        cur.execute("SELECT url, metadata FROM article")
        assert cur.fetchone() == (None, {"topic": "Arts\tand\ncrafts", "n": 1})
