"""The ingestion stages of one batch: parse -> chunk -> embed -> TMD codes, each a pure library call.

The Dagster assets (`raw_articles`, `concept_chunks`, `concept_vectors`) and the CLI call these
functions. Each stage replaces that batch's rows of its own table in ONE transaction: a re-run
leaves exactly one run's rows, and a run killed half-way leaves the previous rows intact. Every
stage streams (a bounded page of articles or concepts at a time), so memory does not grow with
the batch.
"""

from __future__ import annotations

from array import array
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np
from psycopg2 import sql
from tqdm import tqdm

from lvm_pipeline.db import store
from lvm_pipeline.datasets.ordered import load_batch
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.landing import file_sha256
from lvm_pipeline.segmentation import SegmentationMode, segment
from lvm_pipeline.sources import Article, Rejected, read_batch
from lvm_pipeline.sources.records import DEFAULT_MAX_ARTICLE_CHARS, EXCERPT_CHARS
from lvm_pipeline.tmd.assigners import TmdAssigner
from lvm_pipeline.tmd.schema import pack_tmd

ARTICLE_PAGE = 1_000  # articles per COPY / per duplicate look-up
CONCEPT_PAGE = 2_048  # concepts per encode call + COPY
QUARANTINE_SAMPLE = 20  # quarantined records kept in the report, for display
CPE_NAMESPACE = uuid.UUID("6f1d3c2e-4b7a-5e88-9c41-2a0f8e7d6b53")
T = TypeVar("T")

ARTICLE_COLUMNS = ("article_id", "batch_id", "ord", "title", "text", "url", "metadata")
QUARANTINE_COLUMNS = ("batch_id", "locator", "article_id", "reason", "raw_excerpt")
CPE_COLUMNS = ("cpe_id", "dataset_source", "batch_id", "article_id", "article_title",
               "seq_in_article", "concept_text", "char_start", "char_end")


def pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page


def _progress(total: int | None, unit: str, desc: str):
    return tqdm(total=total, unit=unit, desc=desc, mininterval=2.0, dynamic_ncols=True)


# -- parse ----------------------------------------------------------------------------------
@dataclass
class ParseReport:
    batch_id: str
    content_hash: str
    n_records: int = 0
    n_articles: int = 0
    quarantined: list[Rejected] = field(default_factory=list)  # first QUARANTINE_SAMPLE, for display
    n_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)  # reason kind -> count
    sample: list[Article] = field(default_factory=list)
    seconds: float = 0.0


def parse_batch(conn, path: Path, batch_id: str | None = None,
                max_article_chars: int = DEFAULT_MAX_ARTICLE_CHARS) -> ParseReport:
    """Validate a landing file into `article` rows; quarantine bad records with their reasons.

    Duplicate article ids are quarantined: a repeat inside the file, and an id another batch
    already holds (the first batch to ingest an article keeps it).
    """
    started = time.perf_counter()
    path = Path(path)
    records = read_batch(path, max_article_chars=max_article_chars)  # raises for a bad file, eagerly
    batch_id = batch_id or path.name
    report = ParseReport(batch_id=batch_id, content_hash=file_sha256(path))
    first_seen: dict[str, str] = {}  # article id -> locator of its first occurrence

    def quarantine(cur, rejected: list[Rejected]) -> None:
        store.copy_rows(cur, "quarantine", QUARANTINE_COLUMNS,
                        ((batch_id, r.locator, r.article_id, r.reason, r.excerpt) for r in rejected))
        report.n_quarantined += len(rejected)
        report.reasons.update(r.reason.split(":")[0] for r in rejected)
        report.quarantined.extend(rejected[: QUARANTINE_SAMPLE - len(report.quarantined)])

    with conn, conn.cursor() as cur:
        store.upsert_batch(cur, batch_id, str(path.resolve()), report.content_hash)
        store.delete_batch_rows(cur, "article", batch_id)
        store.delete_batch_rows(cur, "quarantine", batch_id)
        with _progress(None, "record", f"parse {batch_id}") as bar:
            for page in pages(records, ARTICLE_PAGE):
                report.n_records += len(page)
                bar.update(len(page))
                rejected = [r for r in page if isinstance(r, Rejected)]
                fresh: list[Article] = []
                for article in (a for a in page if isinstance(a, Article)):
                    if article.article_id in first_seen:
                        rejected.append(_duplicate(article, f"appears earlier in this batch ({first_seen[article.article_id]})"))
                    else:
                        first_seen[article.article_id] = article.locator
                        fresh.append(article)
                held = store.articles_in_other_batches(cur, [a.article_id for a in fresh], batch_id)
                kept = [a for a in fresh if a.article_id not in held]
                rejected += [_duplicate(a, f"is already ingested in batch {held[a.article_id]!r}")
                             for a in fresh if a.article_id in held]
                store.copy_rows(cur, "article", ARTICLE_COLUMNS, (
                    (a.article_id, batch_id, report.n_articles + i, a.title, a.text, a.url, a.metadata)
                    for i, a in enumerate(kept)))
                report.n_articles += len(kept)
                report.sample.extend(kept[: 3 - len(report.sample)])
                quarantine(cur, rejected)
        store.update_batch(cur, batch_id, status="parsed", n_records=report.n_records,
                           n_articles=report.n_articles, n_quarantined=report.n_quarantined)
    report.seconds = time.perf_counter() - started
    return report


def _duplicate(article: Article, where: str) -> Rejected:
    return Rejected(locator=article.locator, article_id=article.article_id,
                    reason=f"duplicate article id: {article.article_id!r} {where}",
                    excerpt=f"{article.title}: {article.text}"[:EXCERPT_CHARS])


# -- chunk ----------------------------------------------------------------------------------
@dataclass
class ChunkReport:
    batch_id: str
    mode: str
    n_articles: int = 0
    n_concepts: int = 0
    lengths: array = field(default_factory=lambda: array("I"))  # chars per concept, compact
    sample: list[tuple[str, int, str]] = field(default_factory=list)  # (title, seq, text)
    seconds: float = 0.0


def cpe_id(article_id: str, seq: int, start: int, end: int, text: str) -> uuid.UUID:
    """Stable concept id: the same chunk of the same article gets the same id on every run."""
    return uuid.uuid5(CPE_NAMESPACE, f"{article_id}\x1f{seq}\x1f{start}\x1f{end}\x1f{text}")


def chunk_batch(conn, batch_id: str, mode: SegmentationMode = "packed", min_chars: int = 250,
                max_chars: int = 400, dataset_source: str = "wikipedia") -> ChunkReport:
    """Segment the batch's articles into ordered concepts (`cpe_entry` rows) with exact char offsets."""
    started = time.perf_counter()
    report = ChunkReport(batch_id=batch_id, mode=mode)
    with conn, conn.cursor() as cur:
        for page in _replace_rows(conn, cur, batch_id, "cpe_entry", ARTICLE_PAGE, "article", "chunk",
                                  "SELECT article_id, title, text FROM article WHERE batch_id = %s ORDER BY ord"):
            rows = []
            for article_id, title, text in page:
                for c in segment(text, mode, min_chars=min_chars, max_chars=max_chars):
                    rows.append((cpe_id(article_id, c.seq, c.start, c.end, c.text), dataset_source,
                                 batch_id, article_id, title, c.seq, c.text, c.start, c.end))
                    report.lengths.append(len(c.text))
                    if len(report.sample) < 5:
                        report.sample.append((title, c.seq, c.text))
            report.n_concepts += store.copy_rows(cur, "cpe_entry", CPE_COLUMNS, rows)
            report.n_articles += len(page)
        store.update_batch(cur, batch_id, status="chunked", n_concepts=report.n_concepts)
    report.seconds = time.perf_counter() - started
    return report


# -- embed ----------------------------------------------------------------------------------
@dataclass
class EmbedReport:
    batch_id: str
    encoder: str
    dimension: int
    fingerprint: str
    n_vectors: int = 0
    encode_seconds: float = 0.0
    write_seconds: float = 0.0
    seconds: float = 0.0


def embed_batch(conn, batch_id: str, encoder: SentenceEncoder) -> EmbedReport:
    """Encode every concept of the batch and COPY the vectors, refusing to mix encoders."""
    started = time.perf_counter()
    report = EmbedReport(batch_id, encoder.name, encoder.dimension, encoder.fingerprint)
    with conn, conn.cursor() as cur:
        encoder_id = store.register_encoder(cur, encoder.name, encoder.dimension, encoder.fingerprint,
                                            encoder.probe_vector)
        for page in _replace_rows(conn, cur, batch_id, "cpe_vector", CONCEPT_PAGE, "concept", "embed",
                                  "SELECT cpe_id::text, concept_text FROM cpe_entry WHERE batch_id = %s"):
            t0 = time.perf_counter()
            vectors = encoder.encode([text for _, text in page])
            t1 = time.perf_counter()
            ids = [uuid.UUID(cid).bytes for cid, _ in page]
            report.n_vectors += store.copy_vectors(cur, ids, batch_id, encoder_id, vectors)
            report.encode_seconds += t1 - t0
            report.write_seconds += time.perf_counter() - t1
        store.update_batch(cur, batch_id, status="embedded", n_vectors=report.n_vectors, encoder_id=encoder_id)
    report.seconds = time.perf_counter() - started
    return report


def _replace_rows(conn, cur, batch_id: str, target: str, page_size: int, unit: str, stage: str,
                  source_query: str) -> Iterator[list[tuple]]:
    """Delete the batch's `target` rows, then stream the batch's source rows page by page.

    Runs inside the caller's transaction; the source is read through a server-side cursor.
    """
    cur.execute(sql.SQL("SELECT count(*) FROM ({}) AS source").format(sql.SQL(source_query)), (batch_id,))
    total = cur.fetchone()[0]
    store.delete_batch_rows(cur, target, batch_id)
    with conn.cursor(name=f"{stage}_{uuid.uuid4().hex}") as source, _progress(total, unit, f"{stage} {batch_id}") as bar:
        source.itersize = page_size
        source.execute(source_query, (batch_id,))
        for page in pages(source, page_size):
            yield page
            bar.update(len(page))


# -- TMD codes ------------------------------------------------------------------------------
@dataclass
class TmdReport:
    batch_id: str
    assigner: str
    n_articles: int = 0
    n_concepts: int = 0
    domain_counts: Counter = field(default_factory=Counter)  # domain code (-1 unknown) -> concepts
    unknown: dict[str, int] = field(default_factory=dict)  # axis -> concepts with UNKNOWN
    seconds: float = 0.0


def assign_tmd(conn, batch_id: str, assigner: TmdAssigner) -> TmdReport:
    """Domain per article, task and modifier per concept, written onto `cpe_entry` in one transaction.

    Unknown (confidence under the assigner's threshold) is stored as -1, never as code 0 (Science);
    `tmd_bits` is only set when all three axes are known.
    """
    started = time.perf_counter()
    batch = load_batch(conn, batch_id)
    vectors = np.nan_to_num(batch.vectors)  # a concept without a vector scores as nothing, not NaN
    report = TmdReport(batch_id=batch_id, assigner=assigner.name, n_concepts=len(batch.texts))
    starts = [i for i in range(len(batch.article_ids)) if i == 0 or batch.article_ids[i] != batch.article_ids[i - 1]]
    bounds = list(zip(starts, starts[1:] + [len(batch.article_ids)]))
    report.n_articles = len(bounds)
    article_vectors = np.stack([vectors[a:b].mean(axis=0) for a, b in bounds]) if bounds else vectors[:0]
    article_vectors /= np.maximum(np.linalg.norm(article_vectors, axis=1, keepdims=True), 1e-12)
    domains = assigner.assign_domains([batch.titles[a] for a, _ in bounds],
                                      [" ".join(batch.texts[a:b]) for a, b in bounds], article_vectors)
    tasks, modifiers = assigner.assign_concepts(batch.texts, vectors)
    per_concept = np.repeat(np.arange(len(bounds)), [b - a for a, b in bounds])
    domain_codes, domain_conf = domains.codes[per_concept], domains.confidence[per_concept]
    rows = []
    for i, cid in enumerate(batch.cpe_ids):
        codes = (int(domain_codes[i]), int(tasks.codes[i]), int(modifiers.codes[i]))
        bits = pack_tmd(*codes) if min(codes) >= 0 else None
        rows.append((cid, *codes, bits, float(domain_conf[i]), float(tasks.confidence[i]), float(modifiers.confidence[i])))
    report.domain_counts.update(int(c) for c in domain_codes)
    report.unknown = {"domain": int((domain_codes < 0).sum()), "task": int((tasks.codes < 0).sum()),
                      "modifier": int((modifiers.codes < 0).sum())}
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE tmd_in (cpe_id uuid, d smallint, t smallint, m smallint, bits integer,"
                    " dc real, tc real, mc real) ON COMMIT DROP")
        store.copy_rows(cur, "tmd_in", ("cpe_id", "d", "t", "m", "bits", "dc", "tc", "mc"), rows)
        cur.execute(
            """UPDATE cpe_entry e SET domain_code = i.d, task_code = i.t, modifier_code = i.m, tmd_bits = i.bits,
                   domain_confidence = i.dc, task_confidence = i.tc, modifier_confidence = i.mc, tmd_assigner = %s
               FROM tmd_in i WHERE e.cpe_id = i.cpe_id""",
            (assigner.name,),
        )
    report.seconds = time.perf_counter() - started
    return report
