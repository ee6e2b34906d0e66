"""The ingestion stages of one batch: parse -> chunk -> embed -> TMD codes, each a library call.

The Dagster assets (`raw_articles`, `concept_chunks`, `concept_vectors`, `tmd_codes`) call these
functions; the CLI materializes those assets. Each stage replaces that batch's rows of its own
table in ONE transaction: a re-run leaves exactly one run's rows, and a run killed half-way
leaves the previous rows intact. Parsing, chunking and embedding stream (a page of articles or
concepts at a time), so their memory does not grow with the batch; TMD labelling reads the
batch's vectors whole (a batch of 10k articles at 384-D is about 30 MB).
"""

from __future__ import annotations

import time
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvm_pipeline.arrays import article_bounds, unit_rows
from lvm_pipeline.db import articles as article_rows
from lvm_pipeline.db import batches, concepts, duplicates
from lvm_pipeline.db.bulk import copy_vectors, pages
from lvm_pipeline.db.encoders import register_encoder
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.landing import file_sha256
from lvm_pipeline.near_duplicates import signature
from lvm_pipeline.progress import progress
from lvm_pipeline.segmentation import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS, DEFAULT_MODE, SegmentationMode, segment
from lvm_pipeline.sources import Article, Rejected, SourceError, read_batch
from lvm_pipeline.sources.records import DEFAULT_MAX_ARTICLE_CHARS
from lvm_pipeline.text import excerpt
from lvm_pipeline.tmd.assigners import TmdAssigner
from lvm_pipeline.tmd.schema import UNKNOWN, pack_tmd

ARTICLE_PAGE = 1_000  # articles per COPY / per duplicate look-up
CONCEPT_PAGE = 2_048  # concepts per encode call + COPY
SAMPLE = 5  # records kept in a report for display (quarantined: 20)
QUARANTINE_SAMPLE = 20
CPE_NAMESPACE = uuid.UUID("6f1d3c2e-4b7a-5e88-9c41-2a0f8e7d6b53")


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
    n_html_cleaned: int = 0  # articles whose text carried HTML, turned into plain text
    html_cleaned: list[Article] = field(default_factory=list)  # the first SAMPLE of them, for display
    sample: list[Article] = field(default_factory=list)
    seconds: float = 0.0


def parse_batch(conn, path: Path, batch_id: str | None = None,
                max_article_chars: int = DEFAULT_MAX_ARTICLE_CHARS, clean_html: bool = True) -> ParseReport:
    """Validate a landing file into `article` rows; quarantine bad records with their reasons.

    Duplicate article ids are quarantined: a repeat inside the file, and an id another batch
    already holds (the first batch to ingest an article keeps it). With `clean_html`, texts of
    plain-text sources that carry HTML are stored as their plain text, and counted. Each article's
    MinHash signature is stored for the duplicates gate.
    """
    started = time.perf_counter()
    path = Path(path)
    records = read_batch(path, max_article_chars=max_article_chars, clean_html=clean_html)  # raises for a bad file
    batch_id = batch_id or path.name
    version = _file_version(path)
    report = ParseReport(batch_id=batch_id, content_hash=file_sha256(path))
    first_seen: dict[str, str] = {}  # article id -> locator of its first occurrence

    def quarantine(cur, rejected: list[Rejected]) -> None:
        article_rows.copy_quarantine(cur, ((batch_id, r.locator, r.article_id, r.reason, r.excerpt) for r in rejected))
        report.n_quarantined += len(rejected)
        report.reasons.update(r.reason.split(":")[0] for r in rejected)
        report.quarantined.extend(rejected[: QUARANTINE_SAMPLE - len(report.quarantined)])

    with conn, conn.cursor() as cur:
        batches.upsert_batch(cur, batch_id, str(path.resolve()), report.content_hash)
        batches.delete_batch_rows(cur, "article", batch_id)
        batches.delete_batch_rows(cur, "quarantine", batch_id)
        with progress(None, f"parse {batch_id}", "record") as bar:
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
                held = article_rows.articles_in_other_batches(cur, [a.article_id for a in fresh], batch_id)
                kept = [a for a in fresh if a.article_id not in held]
                rejected += [_duplicate(a, f"is already ingested in batch {held[a.article_id]!r}")
                             for a in fresh if a.article_id in held]
                article_rows.copy_articles(cur, (
                    (a.article_id, batch_id, report.n_articles + i, a.title, a.text, a.url, a.metadata)
                    for i, a in enumerate(kept)))
                duplicates.copy_signatures(cur, ((a.article_id, batch_id, signature(a.text)) for a in kept))
                report.n_articles += len(kept)
                report.sample.extend(kept[: SAMPLE - len(report.sample)])
                cleaned = [a for a in kept if a.html_cleaned]
                report.n_html_cleaned += len(cleaned)
                report.html_cleaned.extend(cleaned[: SAMPLE - len(report.html_cleaned)])
                quarantine(cur, rejected)
        if _file_version(path) != version:  # raising rolls the stage back: the batch's previous rows stay
            raise SourceError(f"{path}: the file changed while it was being read ({version[0]:,} -> "
                              f"{path.stat().st_size:,} bytes); re-run once its writer has finished")
        batches.update_batch(cur, batch_id, status="parsed", n_records=report.n_records,
                           n_articles=report.n_articles, n_quarantined=report.n_quarantined)
    report.seconds = time.perf_counter() - started
    return report


def _file_version(path: Path) -> tuple[int, int, int]:
    """(size, mtime in ns, inode): what changes when a file is rewritten or truncated."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _duplicate(article: Article, where: str) -> Rejected:
    return Rejected(locator=article.locator, article_id=article.article_id,
                    reason=f"duplicate article id: {article.article_id!r} {where}",
                    excerpt=excerpt(f"{article.title}: {article.text}"))


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


def chunk_batch(conn, batch_id: str, mode: SegmentationMode | None = None, min_chars: int = DEFAULT_MIN_CHARS,
                max_chars: int = DEFAULT_MAX_CHARS, dataset_source: str = "wikipedia") -> ChunkReport:
    """Segment the batch's articles into ordered concepts (`cpe_entry` rows) with exact char offsets.

    Without a `mode`, a batch keeps the mode it was chunked in last (a new batch: DEFAULT_MODE), so
    a re-ingest never changes a batch's segmentation unless asked to.
    """
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        mode = mode or batches.segmentation_mode(cur, batch_id) or DEFAULT_MODE
        report = ChunkReport(batch_id=batch_id, mode=mode)
        batches.delete_batch_rows(cur, "cpe_entry", batch_id)
        total = article_rows.count_articles(cur, batch_id)
        for page in _progress_pages(article_rows.stream_articles(conn, batch_id, ARTICLE_PAGE), total, "article",
                                    f"chunk {batch_id}"):
            rows = []
            for article_id, title, text in page:
                for c in segment(text, mode, min_chars=min_chars, max_chars=max_chars):
                    rows.append((cpe_id(article_id, c.seq, c.start, c.end, c.text), dataset_source,
                                 batch_id, article_id, title, c.seq, c.text, c.start, c.end))
                    report.lengths.append(len(c.text))
                    if len(report.sample) < SAMPLE:
                        report.sample.append((title, c.seq, c.text))
            report.n_concepts += concepts.copy_concepts(cur, rows)
            report.n_articles += len(page)
        batches.update_batch(cur, batch_id, status="chunked", n_concepts=report.n_concepts, segmentation_mode=mode)
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
        encoder_id = register_encoder(cur, encoder.name, encoder.dimension, encoder.fingerprint, encoder.probe_vector)
        batches.delete_batch_rows(cur, "cpe_vector", batch_id)
        total = concepts.count_concepts(cur, batch_id)
        for page in _progress_pages(concepts.stream_concept_texts(conn, batch_id, CONCEPT_PAGE), total, "concept",
                                    f"embed {batch_id}"):
            t0 = time.perf_counter()
            vectors = encoder.encode([text for _, text in page])
            t1 = time.perf_counter()
            ids = [uuid.UUID(cid).bytes for cid, _ in page]
            report.n_vectors += copy_vectors(cur, ids, batch_id, encoder_id, vectors)
            report.encode_seconds += t1 - t0
            report.write_seconds += time.perf_counter() - t1
        batches.update_batch(cur, batch_id, status="embedded", n_vectors=report.n_vectors, encoder_id=encoder_id)
    report.seconds = time.perf_counter() - started
    return report


def _progress_pages(source: Iterator[list[tuple]], total: int, unit: str, desc: str) -> Iterator[list[tuple]]:
    """The pages of `source`, counted on a progress bar."""
    with progress(total, desc, unit) as bar:
        for page in source:
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

    The domain assigner gets each article's title, concept texts, mean vector and short
    description (a record's `description` field, kept in `article.metadata`; None where absent).

    Unknown (confidence under the assigner's threshold) is stored as -1, never as code 0 (Science);
    `tmd_bits` is only set when all three axes are known.
    """
    started = time.perf_counter()
    batch = concepts.load_batch(conn, batch_id)
    vectors = np.nan_to_num(batch.vectors)  # a concept without a vector scores as nothing, not NaN
    report = TmdReport(batch_id=batch_id, assigner=assigner.name, n_concepts=len(batch.texts))
    bounds = article_bounds(batch.article_ids).tolist()
    report.n_articles = len(bounds)
    sums = np.add.reduceat(vectors, [a for a, _ in bounds], axis=0) if bounds else vectors[:0]
    article_vectors = unit_rows(sums, dtype=np.float32)  # the direction of the mean: the normalised sum
    with conn.cursor() as cur:
        descriptions = article_rows.article_descriptions(cur, batch_id)
    domains = assigner.assign_domains([batch.titles[a] for a, _ in bounds],
                                      [" ".join(batch.texts[a:b]) for a, b in bounds], article_vectors,
                                      [descriptions.get(batch.article_ids[a]) for a, _ in bounds])
    tasks, modifiers = assigner.assign_concepts(batch.texts, vectors)
    per_concept = np.repeat(np.arange(len(bounds)), [b - a for a, b in bounds])
    domain_codes, domain_conf = domains.codes[per_concept], domains.confidence[per_concept]
    rows = []
    for i, cid in enumerate(batch.cpe_ids):
        codes = (int(domain_codes[i]), int(tasks.codes[i]), int(modifiers.codes[i]))
        bits = pack_tmd(*codes) if min(codes) >= 0 else None
        rows.append((cid, *codes, bits, float(domain_conf[i]), float(tasks.confidence[i]), float(modifiers.confidence[i])))
    report.domain_counts.update(int(c) for c in domain_codes)
    report.unknown = {"domain": int((domain_codes == UNKNOWN).sum()), "task": int((tasks.codes == UNKNOWN).sum()),
                      "modifier": int((modifiers.codes == UNKNOWN).sum())}
    with conn, conn.cursor() as cur:
        concepts.write_tmd_codes(cur, rows, assigner.name)
    report.seconds = time.perf_counter() - started
    return report
