"""`experiment_comparison`: every family's and every variant's current checkpoint on the same test queries."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.datasets.sequences import load_sequences
from lvm_pipeline.defs.datasets import sequences_dir, training_sequences
from lvm_pipeline.defs.training import lvm_checkpoint, lvm_variant, variants_dir
from lvm_pipeline.experiments.comparison import Entry, compare, trained_entry, write_comparison
from lvm_pipeline.experiments.variants import VARIANTS
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training.runs import current_run_dir


class ComparisonConfig(Config):
    n_resamples: int = Field(default=1000, description="Cluster-bootstrap resamples (by article) behind every CI.")
    seed: int = 0


@asset(group_name="experiments", deps=[training_sequences, lvm_checkpoint, lvm_variant], kinds={"markdown", "csv"})
def experiment_comparison(context: AssetExecutionContext, config: ComparisonConfig) -> MaterializeResult:
    """One table of every trained family and variant with CIs, paired differences to the best baseline and to 1A;
    each run's rows appended to experiments.csv."""
    bank = open_bank(settings().exports_dir)
    sequences = load_sequences(bank, sequences_dir())
    runs = [(family, None, current_run_dir(settings().checkpoints_dir, family)) for family in FAMILY_NAMES]
    runs += [(family, variant, current_run_dir(variants_dir(), f"{family}-{variant}"))
             for family in FAMILY_NAMES for variant in VARIANTS]
    entries: list[Entry] = []
    for family, variant, run_dir in runs:
        found = trained_entry(run_dir, family, variant, sequences) if run_dir else None
        if isinstance(found, str):
            context.log.info(f"{family} {variant or ''}: {found}")
        elif found is not None:
            entries.append(found)
    if not entries:
        raise FileNotFoundError("no trained model to compare: materialize lvm_checkpoint or lvm_variant first")
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if any(e.predictor.uses_tmd for e in entries) else None
    comparison = compare(sequences, entries, n_resamples=config.n_resamples, seed=config.seed, tmd=tmd)
    files = write_comparison(comparison, settings().reports_dir, context.run_id)
    best = max(entries, key=lambda e: comparison.benchmark.results[e.name].estimates["hit_at_5"].value)
    return MaterializeResult(metadata={
        "models": len(entries),
        "variants": sum(e.variant is not None for e in entries),
        "best": best.name,
        "best_hit_at_5": comparison.benchmark.results[best.name].estimates["hit_at_5"].value,
        "decision": comparison.benchmark.decision.decision,
        "comparison": MetadataValue.md(files["markdown"].read_text()),
        "csv": MetadataValue.path(str(files["csv"])),
        "plot": MetadataValue.path(str(files["plot"])),
    })
