"""Per-batch ingestion assets: raw_articles -> concept_chunks -> concept_vectors -> tmd_codes.

Thin wrappers: the work is in `lvm_pipeline.ingest`; these add config, errors Dagster can show,
and metadata a person can read in the UI. The data lives in PostgreSQL, so the assets return
MaterializeResult rather than values.
"""

import statistics
from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline import ingest
from lvm_pipeline.config import settings
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import EncoderResource, LandingResource, PostgresResource
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.markdown import md_table
from lvm_pipeline.segmentation import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS, DEFAULT_MODE
from lvm_pipeline.sources.records import DEFAULT_MAX_ARTICLE_CHARS
from lvm_pipeline.tmd.assigners import assigner_from_config
from lvm_pipeline.tmd.schema import DOMAINS, UNKNOWN

GROUP = "ingestion"


class RawArticlesConfig(Config):
    path: str = Field(default="", description="File to read; empty: the landing file named like the batch.")
    max_article_chars: int = Field(default=DEFAULT_MAX_ARTICLE_CHARS, description="Longer articles are quarantined.")
    clean_html: bool = Field(default=True, description="JSONL/Parquet texts carrying HTML are stored as plain text.")


class ConceptChunksConfig(Config):
    mode: Literal["recorded", "sentence", "packed"] = Field(
        default="recorded", description="one concept per sentence, or whole sentences packed toward min..max chars; "
                                        f"recorded: the mode the batch was chunked in last (a new batch: {DEFAULT_MODE})")
    min_chars: int = DEFAULT_MIN_CHARS
    max_chars: int = DEFAULT_MAX_CHARS
    dataset_source: str = Field(default="wikipedia", description="cpe_entry.dataset_source")


@asset(partitions_def=batches, group_name=GROUP, kinds={"postgres"})
def raw_articles(context: AssetExecutionContext, config: RawArticlesConfig, landing: LandingResource,
                 database: PostgresResource) -> MaterializeResult:
    """Parse and validate one landing file into `article` rows; quarantine bad records with reasons."""
    batch_id = context.partition_key
    path = Path(config.path) if config.path else landing.resolved_path() / batch_id
    try:
        with database.connect() as conn:
            report = ingest.parse_batch(conn, path, batch_id, config.max_article_chars, config.clean_html)
    except (PipelineError, FileNotFoundError) as exc:
        raise Failure(description=f"batch {batch_id!r} rejected: {exc}") from exc
    if report.n_quarantined:
        context.log.warning(f"{report.n_quarantined} of {report.n_records} records quarantined: {dict(report.reasons)}")
    return MaterializeResult(metadata={
        "file": MetadataValue.path(str(path)),
        "content_sha256": report.content_hash,
        "records": report.n_records,
        "articles": report.n_articles,
        "quarantined": report.n_quarantined,
        "quarantine_reasons": MetadataValue.json(dict(report.reasons)),
        "quarantined_examples": MetadataValue.md(md_table(
            ["where", "article id", "reason", "excerpt"],
            [(r.locator, r.article_id or "", r.reason, r.excerpt) for r in report.quarantined],
        ) if report.quarantined else "nothing quarantined"),
        "html_cleaned": report.n_html_cleaned,
        "html_cleaned_examples": MetadataValue.md(md_table(
            ["where", "article id", "plain text kept"],
            [(a.locator, a.article_id, a.text) for a in report.html_cleaned],
        ) if report.html_cleaned else "no text carried HTML"),
        "sample": MetadataValue.md(md_table(["id", "title", "text"], [(a.article_id, a.title, a.text) for a in report.sample])),
        "seconds": round(report.seconds, 2),
    })


@asset(partitions_def=batches, group_name=GROUP, deps=[raw_articles], kinds={"postgres"})
def concept_chunks(context: AssetExecutionContext, config: ConceptChunksConfig,
                   database: PostgresResource) -> MaterializeResult:
    """Segment the batch's articles into ordered concepts (`cpe_entry`) with exact char offsets."""
    with database.connect() as conn:
        mode = None if config.mode == "recorded" else config.mode
        report = ingest.chunk_batch(conn, context.partition_key, mode, config.min_chars, config.max_chars,
                                    config.dataset_source)
    lengths = report.lengths or [0]
    return MaterializeResult(metadata={
        "mode": report.mode,
        "articles": report.n_articles,
        "concepts": report.n_concepts,
        "concepts_per_article": round(report.n_concepts / max(report.n_articles, 1), 2),
        "chars_mean": round(statistics.fmean(lengths), 1),
        "chars_median": statistics.median(lengths),
        "chars_min": min(lengths),
        "chars_max": max(lengths),
        "sample": MetadataValue.md(md_table(["article", "seq", "concept"], report.sample)),
        "seconds": round(report.seconds, 2),
    })


@asset(partitions_def=batches, group_name=GROUP, deps=[concept_chunks], kinds={"pytorch", "postgres"})
def concept_vectors(context: AssetExecutionContext, encoder: EncoderResource,
                    database: PostgresResource) -> MaterializeResult:
    """Encode every concept of the batch and write the vectors (pgvector) with COPY."""
    model = encoder.get()
    try:
        with database.connect() as conn:
            report = ingest.embed_batch(conn, context.partition_key, model)
    except PipelineError as exc:  # another encoder's vectors are in this database
        raise Failure(description=str(exc)) from exc
    return MaterializeResult(metadata={
        "encoder": report.encoder,
        "dimension": report.dimension,
        "fingerprint": report.fingerprint,
        "vectors": report.n_vectors,
        "concepts_per_second": round(report.n_vectors / max(report.encode_seconds, 1e-9), 1),
        "encode_seconds": round(report.encode_seconds, 2),
        "write_seconds": round(report.write_seconds, 2),
        "seconds": round(report.seconds, 2),
    })


class TmdConfig(Config):
    assigner: Literal["zero-shot", "llm"] = Field(
        default="zero-shot", description="zero-shot over the encoder, or an OpenAI-compatible LLM endpoint")
    llm_base_url: str = Field(default="http://127.0.0.1:11434/v1", description="for assigner=llm (e.g. a local Ollama)")
    llm_model: str = Field(default="llama3.1", description="for assigner=llm; the key comes from LVM_LLM_API_KEY")


@asset(partitions_def=batches, group_name=GROUP, deps=[concept_vectors], kinds={"postgres"})
def tmd_codes(context: AssetExecutionContext, config: TmdConfig, encoder: EncoderResource,
              database: PostgresResource) -> MaterializeResult:
    """Domain (per article), task and modifier (per concept) codes with confidences; unknown is explicit (-1)."""
    options = ({"base_url": config.llm_base_url, "model": config.llm_model, "api_key": settings().llm_api_key,
                "cache_dir": settings().llm_cache_dir} if config.assigner == "llm" else {})
    assigner = assigner_from_config(config.assigner, encoder.get(), **options)
    with database.connect() as conn:
        report = ingest.assign_tmd(conn, context.partition_key, assigner)
    names = {code: d.name for code, d in enumerate(DOMAINS)} | {UNKNOWN: "unknown"}
    table = sorted(report.domain_counts.items(), key=lambda kv: -kv[1])
    return MaterializeResult(metadata={
        "assigner": report.assigner,
        "articles": report.n_articles,
        "concepts": report.n_concepts,
        **{f"unknown_{axis}": n for axis, n in report.unknown.items()},
        "domains": MetadataValue.md(md_table(["domain", "concepts", "share"], [
            (names[code], n, f"{n / max(report.n_concepts, 1):.1%}") for code, n in table])),
        "seconds": round(report.seconds, 2),
    })


ingestion_assets = [raw_articles, concept_chunks, concept_vectors, tmd_codes]
