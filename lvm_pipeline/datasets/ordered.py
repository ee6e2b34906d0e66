"""The ordered concept bank: the passing batches in (batch, article, position) order, and its exports.

Each batch is read back in order by `lvm_pipeline.db.concepts.load_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_pipeline.db.concepts import load_batch
from lvm_pipeline.files import atomic_write


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
    atomic_write(paths.npz_path, lambda handle: np.savez(handle, vectors=vectors, **columns))
    atomic_write(paths.bank_vectors_path, lambda handle: np.save(handle, vectors))
    table = pa.table({name: pa.array(values.tolist()) for name, values in columns.items()})
    atomic_write(paths.bank_concepts_path, lambda handle: pq.write_table(table, handle))
    return paths
