"""The concept bank: every concept of the passing batches, in (batch, article, position) order.

On disk, in one folder (`data/exports/` by default):
- `bank_vectors.npy`: (N, D) float32, memory-mappable (`np.load(..., mmap_mode="r")`);
- `bank_concepts.parquet`: one row per vector, same order: cpe_id, batch_id, article_id,
  seq_in_article, concept_text, tmd_bits (UNKNOWN = -1 where no full code), domain_code (the TMD lane;
  UNKNOWN where no domain);
- `bank.json`: the manifest (size, dimension, encoder fingerprint, batches with their content
  hashes, and `version`, a hash of all that and of the concept ids in order);
- `ordered_vectors.npz`, on request: the predecessor's ordered NPZ (DESIGN.md section 3), strings
  as fixed-width unicode arrays, so it loads without allow_pickle.

`export_bank` streams from PostgreSQL page by page into the files: its memory is bounded by a
page, not by the bank. The three files are written whole under hidden temporary names, then renamed
into place together, the manifest last: an export that fails (database gone, disk full) leaves the
previous bank as it was, and no temporary file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_pipeline.arrays import article_bounds
from lvm_pipeline.db.bulk import read_snapshot
from lvm_pipeline.db.concepts import BANK_COLUMNS, count_bank, stream_bank
from lvm_pipeline.db.encoders import registered_encoders
from lvm_pipeline.files import atomic_files, atomic_write
from lvm_pipeline.tmd.schema import domain_of_bits

VECTORS_FILE = "bank_vectors.npy"
CONCEPTS_FILE = "bank_concepts.parquet"
MANIFEST_FILE = "bank.json"
LEGACY_NPZ_FILE = "ordered_vectors.npz"
PAGE = 8_192  # concepts per page read from PostgreSQL

_SCHEMA = pa.schema([("cpe_id", pa.string()), ("batch_id", pa.string()), ("article_id", pa.string()),
                     ("seq_in_article", pa.int32()), ("concept_text", pa.string()), ("tmd_bits", pa.int32()),
                     ("domain_code", pa.int16())])


@dataclass(frozen=True)
class BankExport:
    directory: Path
    n_concepts: int
    dimension: int
    version: str
    n_bytes: int  # of the vectors file

    @property
    def vectors_path(self) -> Path:
        return self.directory / VECTORS_FILE


def export_bank(conn, batches: list[tuple[str, str]], out_dir: Path, legacy_npz: bool = False,
                page_size: int = PAGE) -> BankExport:
    """Stream the concepts of `batches` ((batch id, content hash), in bank order) into `out_dir`."""
    out_dir = Path(out_dir)
    batch_ids = [b for b, _ in batches]
    conn.rollback()  # a fresh transaction, so that the snapshot below covers the count and the read
    with conn.cursor() as cur:
        read_snapshot(cur)
        n = count_bank(cur, batch_ids)
        encoders = registered_encoders(cur)
    dimension, fingerprint = encoders[0] if encoders else (0, None)
    digest = hashlib.sha256(json.dumps([fingerprint, batches]).encode())
    written = 0
    with atomic_files(out_dir / VECTORS_FILE, out_dir / CONCEPTS_FILE, out_dir / MANIFEST_FILE) as (
            vectors_file, concepts_file, manifest_file):
        np.lib.format.write_array_header_1_0(vectors_file, {"descr": "<f4", "fortran_order": False,
                                                            "shape": (n, dimension)})
        with _parquet_writer(concepts_file) as concepts:
            for rows, vectors in stream_bank(conn, batch_ids, page_size):
                vectors_file.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                concepts.write_table(pa.table(dict(zip(BANK_COLUMNS, zip(*rows))), schema=_SCHEMA))
                digest.update("".join(f"{row[0]}\n" for row in rows).encode())
                written += len(rows)
        if written != n:  # cannot happen in one snapshot; never write a header that lies
            raise RuntimeError(f"bank export read {written} concepts, counted {n}")
        conn.rollback()  # end the read-only snapshot
        version = digest.hexdigest()[:16]
        manifest_file.write(_manifest(n, dimension, fingerprint, version, batches))
    if legacy_npz:
        write_legacy_npz(open_bank(out_dir), out_dir / LEGACY_NPZ_FILE)
    return BankExport(out_dir, n, dimension, version, (out_dir / VECTORS_FILE).stat().st_size)


def write_bank(out_dir: Path, vectors: np.ndarray, concepts: dict[str, list], encoder_fingerprint: str | None = None) -> Bank:
    """A bank from arrays already in memory (BANK_COLUMNS -> values, rows in bank order): for banks built
    elsewhere, benchmarks and tests; `domain_code` defaults to the domain of `tmd_bits`. The version hashes the
    concept ids in order and the fingerprint."""
    out_dir = Path(out_dir)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    concepts = {"domain_code": domain_of_bits(np.asarray(concepts["tmd_bits"])).tolist(), **concepts}
    table = pa.table({name: concepts[name] for name in BANK_COLUMNS}, schema=_SCHEMA)
    digest = hashlib.sha256(json.dumps([encoder_fingerprint, []]).encode())
    digest.update("".join(f"{cpe_id}\n" for cpe_id in concepts["cpe_id"]).encode())
    manifest = _manifest(len(vectors), vectors.shape[1], encoder_fingerprint, digest.hexdigest()[:16], [])
    with atomic_files(out_dir / VECTORS_FILE, out_dir / CONCEPTS_FILE, out_dir / MANIFEST_FILE) as handles:
        np.save(handles[0], vectors)
        pq.write_table(table, handles[1])
        handles[2].write(manifest)
    return open_bank(out_dir)


def _manifest(n: int, dimension: int, fingerprint: str | None, version: str, batches: list[tuple[str, str]]) -> bytes:
    manifest = {"n_concepts": n, "dimension": dimension, "encoder_fingerprint": fingerprint, "version": version,
                "batches": [{"batch_id": b, "content_hash": h} for b, h in batches]}
    return json.dumps(manifest, indent=2).encode()


@contextmanager
def _parquet_writer(handle) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on an open file (a row group per write). After a failure it is closed quietly, so
    that the failure surfaces, not a second one from the half-written file."""
    writer = pq.ParquetWriter(handle, _SCHEMA)
    try:
        yield writer
    except BaseException:
        with suppress(Exception):
            writer.close()
        raise
    writer.close()


class Bank:
    """A bank on disk: vectors memory-mapped (read-only), concepts as numpy arrays, article runs."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / MANIFEST_FILE).read_text())
        self.vectors = np.load(self.directory / VECTORS_FILE, mmap_mode="r")
        if len(self.vectors) != self.manifest["n_concepts"]:
            raise RuntimeError(f"{self.directory}: {len(self.vectors)} vectors, the manifest says "
                               f"{self.manifest['n_concepts']}: export the bank again")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @cached_property
    def concepts(self) -> pa.Table:
        return pq.read_table(self.directory / CONCEPTS_FILE)

    def column(self, name: str) -> np.ndarray:
        return self.concepts.column(name).to_numpy(zero_copy_only=False)

    @cached_property
    def article_ids(self) -> np.ndarray:
        return self.column("article_id")

    @cached_property
    def texts(self) -> np.ndarray:
        return self.column("concept_text")

    @cached_property
    def domain_codes(self) -> np.ndarray:
        """(N,) int64 TMD domain (lane) of every row, UNKNOWN where none (from tmd_bits in banks exported
        before the domain_code column)."""
        if "domain_code" in self.concepts.column_names:
            return self.column("domain_code").astype(np.int64)
        return domain_of_bits(self.column("tmd_bits"))

    @cached_property
    def article_bounds(self) -> np.ndarray:
        """(n_articles, 2) [start, end) bank rows of each article, in bank order."""
        return article_bounds(self.article_ids)

    @cached_property
    def bank_article(self) -> np.ndarray:
        """(N,) the article index (a row of `article_bounds`) of every bank row."""
        return np.repeat(np.arange(len(self.article_bounds)), np.diff(self.article_bounds, axis=1).ravel())


def open_bank(directory: Path) -> Bank:
    """The bank exported to `directory`; FileNotFoundError if there is none (materialize ordered_vectors)."""
    if not (Path(directory) / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"no concept bank in {directory}: materialize ordered_vectors first")
    return Bank(directory)


def write_legacy_npz(bank: Bank, path: Path) -> Path:
    """The predecessor's ordered NPZ: cpe_ids, concept_texts, vectors, tmd_codes, batch_ids, seq_in_article,
    article_ids (fixed-width unicode strings: no pickle). Loads the whole bank: for small banks."""
    columns = {"cpe_ids": bank.column("cpe_id").astype(str), "concept_texts": bank.texts.astype(str),
               "tmd_codes": bank.column("tmd_bits").astype(np.int32), "batch_ids": bank.column("batch_id").astype(str),
               "seq_in_article": bank.column("seq_in_article").astype(np.int64),
               "article_ids": bank.article_ids.astype(str)}
    return atomic_write(path, lambda f: np.savez(f, vectors=np.asarray(bank.vectors), **columns))
