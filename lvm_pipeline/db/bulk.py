"""Bulk reads and writes: COPY in (text rows, binary vectors), pages out through server-side cursors.

Callers own the transaction. Vectors use PostgreSQL's binary COPY format built with numpy in one
pass, so writing costs a few percent of encoding (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

import numpy as np
from psycopg2 import sql

T = TypeVar("T")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items."""
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page


def stream(conn, query: str, params: Sequence[Any] | dict[str, Any], page_size: int) -> Iterator[list[tuple]]:
    """Rows of `query` in pages, through a server-side cursor (memory bounded by a page)."""
    with conn.cursor(name=f"stream_{uuid.uuid4().hex}") as cursor:
        cursor.itersize = page_size
        cursor.execute(query, params)
        yield from pages(cursor, page_size)


def read_snapshot(cur) -> None:
    """Make the caller's transaction a read-only snapshot: every statement in it sees the same data."""
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def _copy_text(value: Any) -> str:
    """One field in COPY's text format: \\N for NULL, backslash escapes for the separators."""
    if value is None:
        return "\\N"
    if isinstance(value, dict):
        value = json.dumps(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(cur, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows (None -> NULL, dict -> JSON) into `table` in the text format; return the number written."""
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(map(_copy_text, row)) + "\n")
        count += 1
    if count:
        buffer.seek(0)
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
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
    """Binary COPY of one page of a batch's vectors; return the number written."""
    if len(cpe_ids) != len(vectors):
        raise ValueError(f"{len(cpe_ids)} ids for {len(vectors)} vectors")
    if len(cpe_ids):
        payload = vector_copy_payload(cpe_ids, batch_id, encoder_id, vectors)
        cur.copy_expert(
            "COPY cpe_vector (cpe_id, batch_id, encoder_id, concept_vec) FROM STDIN WITH (FORMAT binary)",
            io.BytesIO(payload))
    return len(cpe_ids)
