"""The benchmark report: every baseline (and, once trained, every model) on the same test queries and full bank."""

import json
from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.decoders import configured_inverter
from lvm_pipeline.defs.datasets import current_sequences, leakage, ordered_vectors, sequences_dir, training_sequences
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import beats_copy_last, lvm_checkpoint, training_loss
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.evaluation.benchmark import run_benchmark
from lvm_pipeline.evaluation.context_text import context_embeddings, model_views
from lvm_pipeline.evaluation.report import write_report
from lvm_pipeline.evaluation.retrieval import IVF_ABOVE, BankIndex
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.training.checkpoint import trained_model
from lvm_pipeline.training.runs import current_run_dir


class BenchmarkConfig(Config):
    split: Literal["test", "val"] = Field(default="test", description="The split whose windows are the queries.")
    n_resamples: int = Field(default=1000, description="Cluster-bootstrap resamples (by article) behind every CI.")
    seed: int = 0
    ensemble: bool = Field(default=True, description="Also measure the ensemble of the trained models and "
                                                      "encode_context, weighted on val (docs/EVALUATION.md).")
    ivf_above: int = Field(default=IVF_ABOVE, description="Banks larger than this are searched with an IVF index, "
                                                          "smaller ones exhaustively (flat).")


def context_embedding_cost(sequences, encoder: SentenceEncoder | None) -> dict:
    """What the bank's cached context embeddings (encode_context, the text view) hold and what encoding them cost."""
    sidecar = context_embeddings(sequences, encoder, sequences_dir()).path.with_suffix(".json") if encoder else None
    if sidecar is None or not sidecar.is_file():
        return {}
    saved = json.loads(sidecar.read_text())
    return {"context_embeddings": saved["contexts"], "context_embeddings_cost": MetadataValue.json(saved["last_encode"])}


def _invert(bank, bank_encoder):
    """vec2text's inversion when its weights are configured and the bank's encoder is at hand (it re-encodes)."""
    inverter = configured_inverter(bank.vectors[:1]) if bank_encoder is not None else None
    return inverter and inverter.invert


def current_models(sequences, log, encoder: SentenceEncoder | None = None) -> tuple[list[ModelPredictor], dict[str, list[dict]]]:
    """Each family's current model trained on these sequences (the others are logged and left out), and each one's
    training history by name; `encoder`, the bank's, gives the models that read the text view their views."""
    models, curves = [], {}
    for family in FAMILY_NAMES:
        run_dir = current_run_dir(settings().checkpoints_dir, family)
        found = trained_model(run_dir, sequences) if run_dir else "not trained yet"
        if isinstance(found, str):
            log.info(f"{family}: {found}")
            continue
        model, sidecar, history = found
        models.append(ModelPredictor(model, sidecar["model_name"],
                                     views=model_views(model, sequences, encoder, sequences_dir())))
        curves[sidecar["model_name"]] = history
    return models, curves


@asset(group_name="evaluation", deps=[training_sequences, lvm_checkpoint], kinds={"markdown", "json"})
def benchmark_report(context: AssetExecutionContext, config: BenchmarkConfig, encoder: EncoderResource) -> MaterializeResult:
    """Baselines (and models) vs the rule: Hit@K on the full bank with CIs, decoding back to text, the decision,
    examples and plots."""
    sequences = current_sequences()
    bank = sequences.bank
    encoder_of_bank = encoder.for_bank(bank, context.log)
    models, curves = current_models(sequences, context.log, encoder_of_bank)
    benchmark = run_benchmark(sequences, models, split=config.split, n_resamples=config.n_resamples, seed=config.seed,
                              index=BankIndex(bank.vectors, ivf_above=config.ivf_above), encoder=encoder_of_bank,
                              cache_dir=sequences_dir(), invert=_invert(bank, encoder_of_bank), ensemble=config.ensemble)
    about = {"bank_version": bank.version, "sequences_version": sequences.version,
             "encoder_fingerprint": bank.manifest["encoder_fingerprint"],
             "max_context": sequences.spec.max_context, "n_resamples": config.n_resamples}
    files = write_report(benchmark, bank.texts, settings().reports_dir, about, curves)
    decision = benchmark.decision
    context.log.info(f"benchmark: {decision.decision}: {decision.reason}")
    best = benchmark.results[decision.best_baseline].estimates["hit_at_5"]
    return MaterializeResult(metadata={
        "decision": decision.decision,
        "reason": decision.reason,
        "bank_size": benchmark.bank_size,
        "queries": len(benchmark.queries),
        "articles": benchmark.n_articles,
        "chance_hit_at_5": benchmark.chance[5],
        "best_baseline": decision.best_baseline,
        "best_baseline_hit_at_5": best.value,
        **context_embedding_cost(sequences, encoder_of_bank),
        "report": MetadataValue.md(files.text),
        "markdown": MetadataValue.path(str(files.markdown)),
        "json": MetadataValue.path(str(files.json)),
        **{f"plot_{name}": MetadataValue.path(str(path)) for name, path in files.plots.items()},
    })


downstream_assets = [ordered_vectors, training_sequences, benchmark_report]  # what follows the gates, in order
downstream_checks = [leakage]
training_assets, training_checks = [lvm_checkpoint], [training_loss, beats_copy_last]
