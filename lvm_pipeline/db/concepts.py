"""The `cpe_entry` table (one row per concept) and its vectors: writes per stage, and one batch read back in order.

Order is by the article's position in its batch file and the concept's position in the article,
never by row id (the predecessor's tool ordered by row id and measured nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pgvector.psycopg2 import register_vector

from lvm_pipeline.db.batches import content_hash, record_counts, segmentation_mode
from lvm_pipeline.db.bulk import copy_rows, stream
from lvm_pipeline.db.encoders import registered_encoders
from lvm_pipeline.tmd.schema import NOT_ASSIGNED, UNKNOWN

CPE_COLUMNS = ("cpe_id", "dataset_source", "batch_id", "article_id", "article_title",
               "seq_in_article", "concept_text", "char_start", "char_end")
TMD_COLUMNS = ("cpe_id", "d", "t", "m", "bits", "dc", "tc", "mc")


def copy_concepts(cur, rows: Iterable[Sequence]) -> int:
    """COPY `cpe_entry` rows, in CPE_COLUMNS order."""
    return copy_rows(cur, "cpe_entry", CPE_COLUMNS, rows)


def count_concepts(cur, batch_id: str) -> int:
    cur.execute("SELECT count(*) FROM cpe_entry WHERE batch_id = %s", (batch_id,))
    return cur.fetchone()[0]


def stream_concept_texts(conn, batch_id: str, page_size: int) -> Iterator[list[tuple[str, str]]]:
    """Pages of (cpe_id, concept_text), in no particular order."""
    return stream(conn, "SELECT cpe_id::text, concept_text FROM cpe_entry WHERE batch_id = %s", (batch_id,), page_size)


def write_tmd_codes(cur, rows: Iterable[Sequence], assigner: str) -> None:
    """Set the TMD codes of concepts: rows of (cpe_id, domain, task, modifier, bits, and the three confidences)."""
    cur.execute("CREATE TEMP TABLE tmd_in (cpe_id uuid, d smallint, t smallint, m smallint, bits integer,"
                " dc real, tc real, mc real) ON COMMIT DROP")
    copy_rows(cur, "tmd_in", TMD_COLUMNS, rows)
    cur.execute(
        """UPDATE cpe_entry e SET domain_code = i.d, task_code = i.t, modifier_code = i.m, tmd_bits = i.bits,
               domain_confidence = i.dc, task_confidence = i.tc, modifier_confidence = i.mc, tmd_assigner = %s
           FROM tmd_in i WHERE e.cpe_id = i.cpe_id""",
        (assigner,))


@dataclass
class BatchConcepts:
    """One batch's concepts in (article, position) order; vectors are NaN rows where missing."""

    batch_id: str
    content_hash: str
    segmentation_mode: str | None
    cpe_ids: list[str]
    article_ids: list[str]
    titles: list[str]
    texts: list[str]
    seqs: np.ndarray
    domain_codes: np.ndarray  # UNKNOWN or NOT_ASSIGNED where there is no domain
    tmd_bits: np.ndarray  # packed uint16 code as int32; UNKNOWN where some axis is unknown or not assigned
    vectors: np.ndarray
    n_vectors: int
    dimension: int
    fingerprints: list[str]
    n_quarantined: int = 0  # records of the batch's file that were quarantined


def load_batch(conn, batch_id: str) -> BatchConcepts:
    """Read one batch's concepts, vectors and codes back, in order (BatchNotFoundError if unknown)."""
    register_vector(conn)  # vectors arrive as numpy arrays (binary), not text
    with conn.cursor() as cur:
        digest, mode = content_hash(cur, batch_id), segmentation_mode(cur, batch_id)
        _, n_quarantined = record_counts(cur, batch_id)
        encoders = registered_encoders(cur)
        cur.execute(
            """SELECT e.cpe_id::text, e.article_id, e.article_title, e.concept_text, e.seq_in_article,
                      coalesce(e.domain_code, %(not_assigned)s), v.concept_vec, coalesce(e.tmd_bits, %(unknown)s)
               FROM cpe_entry e JOIN article a USING (article_id)
               LEFT JOIN cpe_vector v USING (cpe_id)
               WHERE e.batch_id = %(batch)s ORDER BY a.ord, e.seq_in_article""",
            {"batch": batch_id, "not_assigned": NOT_ASSIGNED, "unknown": UNKNOWN})
        rows = cur.fetchall()
    dimension = encoders[0][0] if encoders else 0
    vectors = np.full((len(rows), dimension), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        if r[6] is not None:
            vectors[i] = r[6].to_numpy()
    return BatchConcepts(
        batch_id=batch_id, content_hash=digest, segmentation_mode=mode,
        cpe_ids=[r[0] for r in rows], article_ids=[r[1] for r in rows], titles=[r[2] for r in rows],
        texts=[r[3] for r in rows], seqs=np.array([r[4] for r in rows], dtype=np.int64),
        domain_codes=np.array([r[5] for r in rows], dtype=np.int16),
        tmd_bits=np.array([r[7] for r in rows], dtype=np.int32), vectors=vectors,
        n_vectors=sum(r[6] is not None for r in rows), dimension=dimension,
        fingerprints=[fp for _, fp in encoders], n_quarantined=n_quarantined)


BANK_COLUMNS = ("cpe_id", "batch_id", "article_id", "seq_in_article", "concept_text", "tmd_bits", "domain_code")


def count_bank(cur, batch_ids: Sequence[str]) -> int:
    """Concepts with a vector in the given batches."""
    cur.execute("SELECT count(*) FROM cpe_vector WHERE batch_id = ANY(%s)", (list(batch_ids),))
    return cur.fetchone()[0]


def stream_bank(conn, batch_ids: Sequence[str], page_size: int) -> Iterator[tuple[list[tuple], np.ndarray]]:
    """Pages of the bank in (batch as listed, article, position) order: (rows of BANK_COLUMNS, (n, D) float32 vectors).

    `tmd_bits` is UNKNOWN where some axis is unknown or not assigned, `domain_code` UNKNOWN where the domain
    is (the lane of the concept: it is known more often than the full code). Read through a server-side
    cursor, so memory is bounded by a page, whatever the size of the bank.
    """
    register_vector(conn)
    query = """SELECT e.cpe_id::text, e.batch_id, e.article_id, e.seq_in_article, e.concept_text,
                      coalesce(e.tmd_bits, %(unknown)s), coalesce(e.domain_code, %(unknown)s),
                      v.concept_vec
               FROM cpe_entry e JOIN article a USING (article_id) JOIN cpe_vector v USING (cpe_id)
               WHERE e.batch_id = ANY(%(batches)s)
               ORDER BY array_position(%(batches)s, e.batch_id), a.ord, e.seq_in_article"""
    for page in stream(conn, query, {"batches": list(batch_ids), "unknown": UNKNOWN}, page_size):
        yield [row[:7] for row in page], np.stack([row[7].to_numpy() for row in page]).astype(np.float32, copy=False)
