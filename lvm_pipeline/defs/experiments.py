"""`experiment_comparison`: every family's and every variant's current checkpoint on the same test queries;
`scaling_report`: a family's model on all batches against the same model and recipe trained on half of them."""

from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.defs.datasets import current_sequences, sequences_dir, training_sequences
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import current_run, lvm_checkpoint, lvm_variant, variants_dir
from lvm_pipeline.evaluation.context_text import model_views
from lvm_pipeline.experiments.comparison import Entry, compare, entry_name, trained_entry, write_comparison
from lvm_pipeline.experiments.comparison import render_markdown as render_comparison
from lvm_pipeline.experiments.scaling import half_of_batches, measure_scaling, render_markdown
from lvm_pipeline.experiments.tracking import log_comparison
from lvm_pipeline.experiments.variants import VARIANTS
from lvm_pipeline.files import atomic_write
from lvm_pipeline.markdown import embedded_png
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.models.base import config_from_dict
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.training.checkpoint import load_checkpoint, trained_model
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.runs import current_run_dir, new_run_dir, set_current
from lvm_pipeline.training.trainer import train


def variant_runs(root: Path) -> list[tuple[str, str, int]]:
    """(family, variant, seed) of every variant run folder under `root`, by family, variant and seed."""
    names = {entry_name(f, v, 0): (f, v) for f in FAMILY_NAMES for v in VARIANTS}
    runs = []
    for folder in root.glob("*") if root.is_dir() else []:
        base, _, seed = folder.name.partition("-seed")
        if base in names and (seed == "" or seed.isdigit()):
            runs.append((*names[base], int(seed or 0)))
    return sorted(runs, key=lambda run: (FAMILY_NAMES.index(run[0]), run[1], run[2]))


class ComparisonConfig(Config):
    n_resamples: int = Field(default=1000, description="Cluster-bootstrap resamples (by article) behind every CI.")
    seed: int = 0


@asset(group_name="experiments", deps=[training_sequences, lvm_checkpoint, lvm_variant], kinds={"markdown", "csv"})
def experiment_comparison(context: AssetExecutionContext, config: ComparisonConfig,
                          encoder: EncoderResource) -> MaterializeResult:
    """One table of every trained family and variant with CIs, paired differences to the best baseline and to 1A;
    each run's rows appended to experiments.csv, and logged to MLflow where the `mlflow` extra is installed."""
    sequences = current_sequences()
    bank_encoder = encoder.for_bank(sequences.bank, context.log)
    runs = [(family, None, 0) for family in FAMILY_NAMES] + variant_runs(variants_dir())
    entries: list[Entry] = []
    for family, variant, seed in runs:
        root = settings().checkpoints_dir if variant is None else variants_dir()
        run_dir = current_run_dir(root, entry_name(family, variant, seed))
        found = trained_entry(run_dir, family, variant, sequences, seed, bank_encoder, sequences_dir()) if run_dir else None
        if isinstance(found, str):
            context.log.info(f"{entry_name(family, variant, seed)}: {found}")
        elif found is not None:
            entries.append(found)
    if not entries:
        raise FileNotFoundError("no trained model to compare: materialize lvm_checkpoint or lvm_variant first")
    comparison = compare(sequences, entries, n_resamples=config.n_resamples, seed=config.seed,
                         encoder=bank_encoder, cache_dir=sequences_dir())
    files = write_comparison(comparison, settings().reports_dir, context.run_id)
    mlflow_uri = settings().mlflow_tracking_uri
    try:  # experiments.csv is the record; a tracking server that is down only costs its copy
        mlflow_run = log_comparison(comparison, files, context.run_id, mlflow_uri)  # None without the extra
    except Exception as error:  # any MLflow or network failure
        context.log.warning(f"not logged to MLflow at {mlflow_uri}: {error!r}")
        mlflow_run = None
    if mlflow_run:
        context.log.info(f"logged {len(entries)} models to MLflow at {mlflow_uri} (parent run {mlflow_run})")
    best = max(entries, key=lambda e: comparison.benchmark.results[e.name].estimates["hit_at_5"].value)
    return MaterializeResult(metadata={
        "models": len(entries),
        "variants": sum(e.variant is not None for e in entries),
        "best": best.name,
        "best_hit_at_5": comparison.benchmark.results[best.name].estimates["hit_at_5"].value,
        "decision": comparison.benchmark.decision.decision,
        "comparison": MetadataValue.md(render_comparison(comparison) + "\n" +
                                       embedded_png("hit_at_k", files["plot"].read_bytes())),
        "csv": MetadataValue.path(str(files["csv"])),
        "plot": MetadataValue.path(str(files["plot"])),
        **({"mlflow_tracking_uri": MetadataValue.text(mlflow_uri), "mlflow_run": mlflow_run} if mlflow_run else {}),
    })


class ScalingConfig(Config):
    family: Literal[FAMILY_NAMES] = Field(default="gru", description="The family whose current checkpoint is the "
                                                                     "model on all batches.")
    n_resamples: int = Field(default=1000, description="Cluster-bootstrap resamples (by article) behind every CI.")
    seed: int = 0


@asset(group_name="experiments", deps=[training_sequences, lvm_checkpoint], kinds={"markdown", "pytorch"})
def scaling_report(context: AssetExecutionContext, config: ScalingConfig, encoder: EncoderResource) -> MaterializeResult:
    """Train the family's current model config and recipe again on half of the batches, then the scaling
    coefficient Hit@5(all) / Hit@5(half) on the same test queries, and Hit@5 at every context length."""
    sequences = current_sequences()
    found = trained_model(current_run(config.family), sequences)
    if isinstance(found, str):
        raise FileNotFoundError(f"{config.family}: {found}: materialize lvm_checkpoint [{config.family}] on this bank")
    model, sidecar, _ = found
    views = model_views(model, sequences, encoder.for_bank(sequences.bank, context.log), sequences_dir())
    half_view, half_batches = half_of_batches(sequences)  # the same bank: the same views
    name = f"{config.family}-half"
    run_dir = new_run_dir(settings().checkpoints_dir / "scaling", name, context.run_id)
    result = train(config_from_dict(sidecar["model_config"]), half_view, run_dir,
                   TrainConfig.from_dict(sidecar["train_config"]), model_name=name, views=views)
    set_current(run_dir)
    half_model, _ = load_checkpoint(result.best_checkpoint)
    full = ModelPredictor(model, f"{config.family}-all", views=views)
    half = ModelPredictor(half_model, name, views=views)
    scaling = measure_scaling(sequences, full, half, half_batches, n_resamples=config.n_resamples, seed=config.seed)
    text = render_markdown(scaling)
    path = atomic_write(settings().reports_dir / "scaling_report.md", lambda f: f.write(text.encode()))
    hit5 = {n: scaling.benchmark.results[n].estimates["hit_at_5"].value for n in (full.name, half.name)}
    return MaterializeResult(metadata={
        "coefficient": scaling.coefficient.value,
        "coefficient_ci_low": scaling.coefficient.ci_low,
        "coefficient_ci_high": scaling.coefficient.ci_high,
        "hit_at_5_all": hit5[full.name],
        "hit_at_5_half": hit5[half.name],
        "half_batches": len(half_batches),
        "half_train_articles": len(half_view.articles["train"]),
        "report": MetadataValue.md(text),
        "markdown": MetadataValue.path(str(path)),
    })
