"""The `batch` table: one row per landing file, its stage, counters, and whether it is excluded on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from lvm_pipeline.errors import BatchNotFoundError


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    status: str  # parsed, chunked, embedded or failed
    n_articles: int
    n_quarantined: int
    n_concepts: int
    n_vectors: int  # counted in cpe_vector, not taken from the counter

    @property
    def coverage(self) -> float | None:
        return self.n_vectors / self.n_concepts if self.n_concepts else None


@dataclass(frozen=True)
class BatchState:
    batch_id: str
    content_hash: str
    status: str
    excluded_reason: str | None
    segmentation_mode: str | None


def upsert_batch(cur, batch_id: str, file_path: str, content_hash: str) -> None:
    cur.execute(
        """INSERT INTO batch (batch_id, file_path, content_hash, status) VALUES (%s, %s, %s, 'parsed')
           ON CONFLICT (batch_id) DO UPDATE SET file_path = EXCLUDED.file_path,
               content_hash = EXCLUDED.content_hash, updated_at = now()""",
        (batch_id, file_path, content_hash))


def update_batch(cur, batch_id: str, **fields: Any) -> None:
    """Set counters/status of a batch, e.g. update_batch(cur, b, status="chunked", n_concepts=10)."""
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields)
    cur.execute(sql.SQL("UPDATE batch SET {}, updated_at = now() WHERE batch_id = {}").format(
        assignments, sql.Placeholder("batch_id")), {**fields, "batch_id": batch_id})


def delete_batch_rows(cur, table: str, batch_id: str) -> None:
    """Delete one batch's rows of a stage table (inside the stage's transaction)."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s").format(sql.Identifier(table)), (batch_id,))


def content_hash(cur, batch_id: str) -> str:
    """The sha256 of the batch's file as ingested last; BatchNotFoundError if there is no such batch."""
    cur.execute("SELECT content_hash FROM batch WHERE batch_id = %s", (batch_id,))
    row = cur.fetchone()
    if row is None:
        raise BatchNotFoundError(f"no batch {batch_id!r} in the database (see `lvm-pipeline batches`)")
    return row[0]


def segmentation_mode(cur, batch_id: str) -> str | None:
    cur.execute("SELECT segmentation_mode FROM batch WHERE batch_id = %s", (batch_id,))
    row = cur.fetchone()
    return row[0] if row else None


def record_counts(cur, batch_id: str) -> tuple[int, int]:
    """(records read, records quarantined) of the batch's file as parsed last; (0, 0) for no such batch."""
    cur.execute("SELECT n_records, n_quarantined FROM batch WHERE batch_id = %s", (batch_id,))
    return cur.fetchone() or (0, 0)


def batch_summaries(cur) -> list[BatchSummary]:
    """Every batch with its counters and the vectors actually stored."""
    cur.execute(
        """SELECT b.batch_id, b.status, b.n_articles, b.n_quarantined, b.n_concepts, coalesce(v.n, 0)
           FROM batch b LEFT JOIN (SELECT batch_id, count(*) AS n FROM cpe_vector GROUP BY batch_id) v USING (batch_id)
           ORDER BY b.batch_id""")
    return [BatchSummary(*row) for row in cur.fetchall()]


def batch_states(cur) -> list[BatchState]:
    cur.execute("SELECT batch_id, content_hash, status, excluded_reason, segmentation_mode FROM batch ORDER BY batch_id")
    return [BatchState(*row) for row in cur.fetchall()]


def ingested_hashes(cur) -> dict[str, str]:
    """batch id -> content hash, for batches fully ingested (by a run or by `lvm-pipeline ingest`)."""
    cur.execute("SELECT batch_id, content_hash FROM batch WHERE status = 'embedded'")
    return dict(cur.fetchall())


def set_excluded(cur, batch_id: str, reason: str | None) -> None:
    """Exclude a batch from training data on purpose (reason), or include it again (None)."""
    cur.execute("UPDATE batch SET excluded_reason = %s WHERE batch_id = %s", (reason, batch_id))
    if cur.rowcount == 0:
        raise BatchNotFoundError(f"no batch {batch_id!r} in the database (see `lvm-pipeline batches`)")
