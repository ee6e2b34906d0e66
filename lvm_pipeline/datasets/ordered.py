"""The ordered concept bank: batches read back in (batch, article, position) order, and its exports.

Order is by the article's position in its batch file and the concept's position in the article,
never by row id (the predecessor's tool ordered by row id and measured nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pgvector.psycopg2 import register_vector


@dataclass
class BatchConcepts:
    """One batch's concepts in (article, position) order; vectors are NaN where missing."""

    batch_id: str
    content_hash: str
    cpe_ids: list[str]
    article_ids: list[str]
    titles: list[str]
    texts: list[str]
    seqs: np.ndarray
    domain_codes: np.ndarray  # -1 unknown, -2 not assigned yet
    tmd_bits: np.ndarray  # packed uint16 code as int32; -1 unknown or not assigned
    vectors: np.ndarray
    n_vectors: int
    dimension: int
    fingerprints: list[str]


def load_batch(conn, batch_id: str) -> BatchConcepts:
    register_vector(conn)  # vectors arrive as numpy arrays (binary), not text
    with conn.cursor() as cur:
        cur.execute("SELECT content_hash FROM batch WHERE batch_id = %s", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no batch {batch_id!r} in the database")
        cur.execute("SELECT dimension, fingerprint FROM encoder")
        encoders = cur.fetchall()
        cur.execute(
            """SELECT e.cpe_id::text, e.article_id, e.article_title, e.concept_text, e.seq_in_article,
                      coalesce(e.domain_code, -2), v.concept_vec, coalesce(e.tmd_bits, -1)
               FROM cpe_entry e JOIN article a USING (article_id)
               LEFT JOIN cpe_vector v USING (cpe_id)
               WHERE e.batch_id = %s ORDER BY a.ord, e.seq_in_article""",
            (batch_id,),
        )
        rows = cur.fetchall()
    dimension = encoders[0][0] if encoders else 0
    vectors = np.full((len(rows), dimension), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        if r[6] is not None:
            vectors[i] = r[6].to_numpy()
    return BatchConcepts(
        batch_id=batch_id, content_hash=row[0],
        cpe_ids=[r[0] for r in rows], article_ids=[r[1] for r in rows], titles=[r[2] for r in rows],
        texts=[r[3] for r in rows], seqs=np.array([r[4] for r in rows], dtype=np.int64),
        domain_codes=np.array([r[5] for r in rows], dtype=np.int16),
        tmd_bits=np.array([r[7] for r in rows], dtype=np.int32), vectors=vectors,
        n_vectors=sum(r[6] is not None for r in rows), dimension=dimension,
        fingerprints=[fp for _, fp in encoders],
    )


@dataclass
class OrderedExport:
    n_concepts: int
    dimension: int
    npz_path: Path
    bank_vectors_path: Path
    bank_concepts_path: Path


def export_ordered(conn, batch_ids: list[str], out_dir: Path) -> OrderedExport:
    """Write the given batches, in order, as the legacy ordered NPZ and the bank later stages read.

    - `ordered_vectors.npz`: cpe_ids, concept_texts, vectors, tmd_codes, batch_ids, seq_in_article,
      article_ids (strings as fixed-width unicode arrays: loads without allow_pickle)
    - `bank_vectors.npy` (float32, memory-mappable) + `bank_concepts.parquet` (one row per vector)
    Files are written under temporary names and renamed, so readers never see half a file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = [load_batch(conn, batch_id) for batch_id in batch_ids]
    dimension = max((b.dimension for b in batches), default=0)
    vectors = np.concatenate([b.vectors for b in batches]) if batches else np.zeros((0, dimension), np.float32)
    columns = {
        "cpe_ids": np.array([i for b in batches for i in b.cpe_ids], dtype=str),
        "concept_texts": np.array([t for b in batches for t in b.texts], dtype=str),
        "tmd_codes": np.concatenate([b.tmd_bits for b in batches]) if batches else np.zeros(0, np.int32),
        "batch_ids": np.array([b.batch_id for b in batches for _ in b.texts], dtype=str),
        "seq_in_article": np.concatenate([b.seqs for b in batches]) if batches else np.zeros(0, np.int64),
        "article_ids": np.array([a for b in batches for a in b.article_ids], dtype=str),
    }
    paths = OrderedExport(len(vectors), dimension, out_dir / "ordered_vectors.npz",
                          out_dir / "bank_vectors.npy", out_dir / "bank_concepts.parquet")
    _atomic(paths.npz_path, lambda tmp: np.savez(tmp, vectors=vectors, **columns))
    _atomic(paths.bank_vectors_path, lambda tmp: np.save(tmp, vectors))
    table = pa.table({name: pa.array(values.tolist()) for name, values in columns.items()})
    _atomic(paths.bank_concepts_path, lambda tmp: pq.write_table(table, tmp))
    return paths


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)
