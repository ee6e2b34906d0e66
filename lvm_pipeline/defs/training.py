"""`lvm_checkpoint`: one trained model per architecture family (a static partition each), with its two checks;
`lvm_variant`: one of the predecessor's variants 1A-1E or a strategy of a family (a static partition each).

The training recipe is the asset's Config (set it in the launchpad); the work is in
`lvm_pipeline.training`. Each epoch's validation figures are logged as an AssetObservation of the
family's partition, so the UI plots them within and across runs; the materialization carries the
best figures, the history as a table and the checkpoint's path. Docs: docs/TRAINING.md.
"""

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Literal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetObservation,
    Config,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)
from dagster._utils.warnings import PreviewWarning
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.defs.datasets import current_sequences, sequences_dir, training_sequences
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.context_text import model_views
from lvm_pipeline.experiments.comparison import entry_name
from lvm_pipeline.experiments.sweep import saved_config
from lvm_pipeline.experiments.variants import VARIANTS
from lvm_pipeline.markdown import md_table
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.models.base import ModelConfig, registered_configs
from lvm_pipeline.training.checkpoint import load_checkpoint
from lvm_pipeline.training.config import PIPELINE_RECIPE, TrainConfig
from lvm_pipeline.training.runs import current_run_dir, new_run_dir, require_current_run, set_current
from lvm_pipeline.training.trainer import train
from lvm_pipeline.training.validation import loss_is_decreasing, val_hit_at_5_vs_copy_last

model_families = StaticPartitionsDefinition(list(FAMILY_NAMES))


class LvmCheckpointConfig(Config):
    model: str = Field(default="", description="A registered model config (e.g. gru_small, gru_768) or one a sweep "
                       "saved (sweep_gru: its model and its tuned recipe fields); empty: <family>_small.")
    text_view: bool = Field(default=True, description="The model also reads the encoder's embedding of the context "
                            "text at each position, and starts from it (docs/TRAINING.md, 'The text view').")
    epochs: int = Field(default=PIPELINE_RECIPE.epochs,
                        description="Passes over the train articles (early stopping may end sooner).")
    batch_size: int = Field(default=PIPELINE_RECIPE.batch_size,
                            description="Articles per step; more of them, more InfoNCE negatives.")
    lr: float = PIPELINE_RECIPE.lr
    loss: Literal["cosine", "mse"] = "cosine"
    infonce_alpha: float = Field(default=PIPELINE_RECIPE.infonce_alpha,
                                 description="Weight of the in-batch InfoNCE term (0: off).")
    infonce_temperature: float = PIPELINE_RECIPE.infonce_temperature
    positions: Literal["all", "last"] = Field(default="all", description="Loss on every position, or the last only.")
    hard_negatives: int = Field(default=PIPELINE_RECIPE.hard_negatives, description="InfoNCE also scores each "
                                "target's k nearest train concepts of other articles (0: off).")
    patience: int = Field(default=PIPELINE_RECIPE.patience,
                          description="Validations without a better val Hit@5 before stopping.")
    time_budget_s: float = Field(default=0, description="Wall-clock seconds for training (0: no budget); the "
                                 "learning-rate schedule then spans the budget, or the epochs if they end first.")
    seed: int = Field(default=0, description="Seed of the initialisation and the batch order (a variant run of "
                                              "another seed is kept beside the others: <family>-<variant>-seed<n>).")
    resume: bool = Field(default=False, description="Continue from this family's last checkpoint.")


def current_run(family: str) -> Path:
    """The family's current training run (PipelineError if it has none: materialize lvm_checkpoint)."""
    return require_current_run(settings().checkpoints_dir, family)


@asset(partitions_def=model_families, deps=[training_sequences], group_name="training", kinds={"pytorch"})
def lvm_checkpoint(context: AssetExecutionContext, config: LvmCheckpointConfig, encoder: EncoderResource) -> MaterializeResult:
    """Train the partition's family on the train articles, validating on val Hit@5 (full bank) every epoch."""
    family = context.partition_key
    run_dir = current_run(family) if config.resume else new_run_dir(settings().checkpoints_dir, family, context.run_id)
    model, train_config = named_config(config, family)
    return train_into(context, model, family, train_config, run_dir, config.resume, encoder=encoder)


def named_config(config: LvmCheckpointConfig, family: str) -> tuple[ModelConfig, TrainConfig]:
    """The model config `config.model` names (`<family>_small` when none is named: a registered config, else one
    `lvm-pipeline sweep` saved, whose tuned recipe fields then replace the Config's), with the text view when asked
    for, and the recipe."""
    name = config.model or f"{family}_small"
    registered = registered_configs()
    model, tuned = (registered[name](), {}) if name in registered else saved_config(name, settings().data_dir / "configs")
    if model.family != family:
        raise PipelineError(f"{name} is a {model.family} config: train it as the {model.family} family, not {family}")
    return replace(model, text_view=True) if config.text_view else model, replace(recipe(config), **tuned)


class LvmVariantConfig(LvmCheckpointConfig):
    """The predecessor's variants change a plain recipe: no text view, no hard negatives (1E adds them)."""

    family: Literal[FAMILY_NAMES] = Field(default="gru", description="The family whose _small config the variant changes.")
    text_view: bool = Field(default=False, description="The variants' base recipe reads the vectors only.")
    hard_negatives: int = Field(default=0, description="The variants' base recipe has none (1E sets 8).")


@asset(partitions_def=StaticPartitionsDefinition(list(VARIANTS)), deps=[training_sequences], group_name="experiments",
       kinds={"pytorch"})
def lvm_variant(context: AssetExecutionContext, config: LvmVariantConfig, encoder: EncoderResource) -> MaterializeResult:
    """Train one of the predecessor's variants (1A baseline, 1B TMD, 1C curriculum, 1D larger, 1E hard negatives) or
    strategies (swa, augment, shuffle, progressive, mse) of a family: its base recipe with the variant's one change.
    Compared in experiment_comparison."""
    variant = VARIANTS[context.partition_key]
    model, train_config = variant.apply(*named_config(config, config.family))
    name = entry_name(config.family, variant.name, config.seed)
    root = variants_dir()
    run_dir = current_run_dir(root, name) if config.resume else new_run_dir(root, name, context.run_id)
    if run_dir is None:
        raise FileNotFoundError(f"no {name} run to resume: materialize lvm_variant [{variant.name}] first")
    return train_into(context, model, name, train_config, run_dir, config.resume,
                      {"variant": f"{variant.name}: {variant.title}", "change": variant.description, "seed": config.seed},
                      encoder)


def variants_dir() -> Path:
    """Where variant runs live: one folder per <family>-<variant>[-seed<n>], as the families' under checkpoints_dir."""
    return settings().checkpoints_dir / "variants"


def recipe(config: LvmCheckpointConfig) -> TrainConfig:
    """The training recipe of an lvm_checkpoint / lvm_variant config."""
    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, loss=config.loss,
                       infonce_alpha=config.infonce_alpha, infonce_temperature=config.infonce_temperature,
                       positions=config.positions, patience=config.patience, seed=config.seed,
                       hard_negatives=config.hard_negatives,
                       time_budget_s=config.time_budget_s or None,
                       decay_over="time_budget" if config.time_budget_s else "epochs")


def train_into(context: AssetExecutionContext, model: ModelConfig, name: str, train_config: TrainConfig,
               run_dir: Path, resume: bool, extra: dict | None = None,
               encoder: EncoderResource | None = None) -> MaterializeResult:
    """Train into `run_dir`, make it current, and describe the best checkpoint; each validation is logged as an
    observation of the asset's partition, so the UI plots the curves across runs. A model with the text view reads
    the context views of the bank's `encoder`."""
    sequences = current_sequences()
    views = model_views(model, sequences, encoder and encoder.for_bank(sequences.bank, context.log),
                        sequences_dir()) if model.text_view else None
    partition = context.partition_key

    def observe(entry: dict) -> None:
        context.log_event(AssetObservation(asset_key=context.asset_key, partition=partition,
                                           metadata={k: v for k, v in entry.items() if isinstance(v, int | float)}))

    result = train(model, sequences, run_dir, train_config, model_name=name, resume=resume, on_epoch_end=observe,
                   views=views)
    set_current(run_dir)
    trained, sidecar = load_checkpoint(result.best_checkpoint)
    history = result.history
    columns = [k for k in ("epoch", "train_loss", "val_cosine", "val_hit_at_1", "val_hit_at_5", "val_hit_at_10", "lr")
               if history and k in history[0]]
    return MaterializeResult(metadata={
        "model": sidecar["model_name"],
        **(extra or {}),
        "config": MetadataValue.json(sidecar["model_config"]),
        "train_config": MetadataValue.json(sidecar["train_config"]),
        "parameters": sum(p.numel() for p in trained.parameters()),
        "epochs": len(history),
        "stopped_because": result.stopped_because,
        **{f"best_{k}": float(v) for k, v in result.best_metrics.items() if isinstance(v, int | float)},
        "dataset_version": sidecar["dataset_version"],
        "checkpoint": MetadataValue.path(str(result.best_checkpoint)),
        "history": MetadataValue.md(md_table(columns, [[_round(e.get(c)) for c in columns] for e in history])),
    })


with warnings.catch_warnings():  # partitioned checks are a preview feature of Dagster 1.13: we rely on it knowingly
    warnings.simplefilter("ignore", PreviewWarning)

    @asset_check(asset=lvm_checkpoint, blocking=True, partitions_def=model_families,
                 description="blocking: the training loss is finite and falls from the first epoch to the last")
    def training_loss(context: AssetCheckExecutionContext) -> AssetCheckResult:
        verdict = loss_is_decreasing(current_run(context.partition_key))
        return AssetCheckResult(passed=verdict.passed, severity=AssetCheckSeverity.ERROR,
                                description=verdict.summary, metadata=verdict.figures)

    @asset_check(asset=lvm_checkpoint, partitions_def=model_families,
                 description="warn: the best checkpoint beats copy-last on val Hit@5 (full bank)")
    def beats_copy_last(context: AssetCheckExecutionContext, encoder: EncoderResource) -> AssetCheckResult:
        sequences = current_sequences()
        verdict = val_hit_at_5_vs_copy_last(current_run(context.partition_key), sequences,
                                            lambda model: model_views(model, sequences, encoder.for_bank(
                                                sequences.bank, context.log), sequences_dir()))
        return AssetCheckResult(passed=verdict.passed, severity=AssetCheckSeverity.WARN,
                                description=verdict.summary, metadata=verdict.figures)


def _round(value):
    return round(value, 4) if isinstance(value, float) else value
