"""`retrieval_benchmark`: given the context text, retrieve the next passage (vec, bm25, lex, each model, hybrids),
with the benchmark exported in BEIR layout (lvm_pipeline.evaluation.retrieval_benchmark)."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.defs.benchmark import current_models
from lvm_pipeline.defs.datasets import current_sequences, sequences_dir, training_sequences
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import lvm_checkpoint
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.context_text import context_embeddings
from lvm_pipeline.evaluation.retrieval_benchmark import DEPTH, export_beir, run_retrieval_benchmark, write_retrieval_report


class RetrievalBenchmarkConfig(Config):
    n_resamples: int = Field(default=1000, description="Cluster-bootstrap resamples (by article) behind every CI.")
    seed: int = 0
    depth: int = Field(default=DEPTH, description="Passages kept per query and backend (context removed).")
    val_limit: int = Field(default=1000, description="Val queries (a seeded sample; 0: all) the models are ranked on "
                                                     "and the fusion weights chosen on.")
    fused_models: int = Field(default=1, description="The best models on val fused with vec and bm25 (0: every model; "
                                                     "each pair costs a few seconds of ranx).")
    latency_queries: int = Field(default=10, description="Queries timed one at a time (0: no latency).")
    latency_batch: int = Field(default=64, description="Queries of the timed batch.")


@asset(group_name="evaluation", deps=[training_sequences, lvm_checkpoint], kinds={"markdown", "json"})
def retrieval_benchmark(context: AssetExecutionContext, config: RetrievalBenchmarkConfig,
                        encoder: EncoderResource) -> MaterializeResult:
    """The predecessor's RAG bench done right: Recall@1/5/10, MRR@10, nDCG@10 with CIs on the full bank, the query's
    context removed; latency from text; index memory; the test queries in BEIR layout."""
    sequences = current_sequences()
    bank = sequences.bank
    bank_encoder = encoder.for_bank(bank, context.log)
    if bank_encoder is None:
        raise PipelineError("the retrieval benchmark needs the bank's encoder (vec and the latency from text): "
                            "configure the encoder the bank was built with")
    models, _ = current_models(sequences, context.log, bank_encoder)
    result = run_retrieval_benchmark(
        sequences, bank_encoder, context_embeddings(sequences, bank_encoder, sequences_dir()), models,
        depth=config.depth, n_resamples=config.n_resamples, seed=config.seed, val_limit=config.val_limit,
        fused_models=config.fused_models, latency_queries=config.latency_queries, latency_batch=config.latency_batch,
        log=context.log.info)
    about = {"bank_version": bank.version, "sequences_version": sequences.version,
             "encoder_fingerprint": bank.manifest["encoder_fingerprint"], "split": "test"}
    files = write_retrieval_report(result, settings().reports_dir, about)
    beir = export_beir(bank, result.queries, settings().exports_dir / "beir")
    target = result.target
    return MaterializeResult(metadata={
        "best": target["best"] or "none (no model)",
        "best_recall_at_10": target["best_value"] if target["best"] else float("nan"),
        "vec_recall_at_10": target["reference_value"],
        "target_met": target["met"],
        "queries": len(result.queries),
        "bank_size": result.bank_size,
        "seconds": round(sum(result.seconds.values()), 1),
        "report": MetadataValue.md(files.text),
        "markdown": MetadataValue.path(str(files.markdown)),
        "json": MetadataValue.path(str(files.json)),
        "beir": MetadataValue.path(str(beir["corpus"].parent)),
    })
