"""Queries and bulk loaders for the stage tables. Callers own the transaction.

Bulk writes use COPY: the text format for text rows, PostgreSQL's binary format for vectors (built with numpy
in one pass, so writing costs a few percent of encoding).
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Iterable, Sequence

import numpy as np
from psycopg2 import sql

from lvm_pipeline.encoders import same_encoder

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


class EncoderMismatchError(RuntimeError):
    """The database already holds vectors of another encoder."""


def _copy_text(value: Any) -> str:
    """One field in COPY's text format: \\N for NULL, backslash escapes for the separators."""
    if value is None:
        return "\\N"
    if isinstance(value, dict):
        value = json.dumps(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(cur, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows (None -> NULL, dict -> JSON) into `table`; return the number written."""
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(map(_copy_text, row)) + "\n")
        count += 1
    if count:
        buffer.seek(0)
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        cur.copy_expert(statement.as_string(cur), buffer)
    return count


def vector_copy_payload(cpe_ids: Sequence[bytes], batch_id: str, encoder_id: int, vectors: np.ndarray) -> bytes:
    """Binary COPY payload for cpe_vector (cpe_id, batch_id, encoder_id, concept_vec).

    Every row has the same layout (one batch id, one dimension), so the rows are one numpy
    structured array; pgvector's binary form is int16 dim, int16 unused, dim x float4.
    """
    n, dim = vectors.shape
    batch = batch_id.encode()
    row = np.dtype([
        ("fields", ">i2"), ("id_len", ">i4"), ("id", "V16"),
        ("batch_len", ">i4"), ("batch", f"V{len(batch)}"),
        ("enc_len", ">i4"), ("enc", ">i4"),
        ("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,)),
    ])
    rows = np.zeros(n, dtype=row)
    rows["fields"] = 4
    rows["id_len"] = 16
    rows["id"] = np.frombuffer(b"".join(cpe_ids), dtype="V16")
    rows["batch_len"] = len(batch)
    rows["batch"] = np.void(batch)
    rows["enc_len"] = 4
    rows["enc"] = encoder_id
    rows["vec_len"] = 4 + 4 * dim
    rows["dim"] = dim
    rows["vec"] = vectors
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def copy_vectors(cur, cpe_ids: Sequence[bytes], batch_id: str, encoder_id: int, vectors: np.ndarray) -> int:
    if len(cpe_ids) != len(vectors):
        raise ValueError(f"{len(cpe_ids)} ids for {len(vectors)} vectors")
    if len(cpe_ids):
        payload = vector_copy_payload(cpe_ids, batch_id, encoder_id, vectors)
        cur.copy_expert(
            "COPY cpe_vector (cpe_id, batch_id, encoder_id, concept_vec) FROM STDIN WITH (FORMAT binary)",
            io.BytesIO(payload),
        )
    return len(cpe_ids)


def register_encoder(cur, name: str, dimension: int, fingerprint: str, probe: np.ndarray) -> int:
    """The encoder id of this database, registering it (and sizing the vector column) the first time.

    Raises EncoderMismatchError when the database holds another encoder's vectors.
    """
    cur.execute("LOCK TABLE encoder IN EXCLUSIVE MODE")
    cur.execute("SELECT encoder_id, name, dimension, fingerprint, probe_vector FROM encoder")
    registered = cur.fetchone()  # at most one row: this function never adds a second
    if registered:
        encoder_id, other_name, other_dim, other_fp, other_probe = registered
        if other_dim == dimension and same_encoder(other_probe, probe):
            return encoder_id
        raise EncoderMismatchError(
            f"this database holds vectors of encoder {other_name!r} ({other_dim}-D, fingerprint {other_fp}); "
            f"refusing to mix in {name!r} ({dimension}-D, fingerprint {fingerprint}). Use the same encoder "
            f"(LVM_ENCODER), or another database (LVM_DATABASE_URL / LVM_DATA_DIR)."
        )
    cur.execute(
        "INSERT INTO encoder (name, dimension, fingerprint, probe_vector) VALUES (%s, %s, %s, %s) RETURNING encoder_id",
        (name, dimension, fingerprint, [float(x) for x in probe]),
    )
    encoder_id = cur.fetchone()[0]
    cur.execute(sql.SQL("ALTER TABLE cpe_vector ALTER COLUMN concept_vec TYPE vector({})").format(sql.Literal(dimension)))
    return encoder_id


def upsert_batch(cur, batch_id: str, file_path: str, content_hash: str) -> None:
    cur.execute(
        """INSERT INTO batch (batch_id, file_path, content_hash, status) VALUES (%s, %s, %s, 'parsed')
           ON CONFLICT (batch_id) DO UPDATE SET file_path = EXCLUDED.file_path,
               content_hash = EXCLUDED.content_hash, updated_at = now()""",
        (batch_id, file_path, content_hash),
    )


def update_batch(cur, batch_id: str, **fields: Any) -> None:
    """Set counters/status of a batch, e.g. update_batch(cur, b, status="chunked", n_concepts=10)."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields
    )
    cur.execute(
        sql.SQL("UPDATE batch SET {}, updated_at = now() WHERE batch_id = {}").format(assignments, sql.Placeholder("batch_id")),
        {**fields, "batch_id": batch_id},
    )


def delete_batch_rows(cur, table: str, batch_id: str) -> None:
    cur.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s").format(sql.Identifier(table)), (batch_id,))


def articles_in_other_batches(cur, article_ids: Sequence[str], batch_id: str) -> dict[str, str]:
    """article id -> the other batch that already holds it."""
    cur.execute(
        "SELECT article_id, batch_id FROM article WHERE article_id = ANY(%s) AND batch_id <> %s",
        (list(article_ids), batch_id),
    )
    return dict(cur.fetchall())
