"""Assets past the gates: the ordered concept bank of the passing batches, and leakage-proof training sequences.

Thin wrappers: the work is in `lvm_pipeline.datasets`; these add config, the leakage check, and
metadata a person can read in the UI.
"""

from typing import Literal

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from lvm_pipeline import validation
from lvm_pipeline.config import settings
from lvm_pipeline.datasets.bank import export_bank, open_bank
from lvm_pipeline.datasets.sequences import (
    SPLITS,
    SplitRatios,
    TrainingSequences,
    WindowSpec,
    build_sequences,
    context_length_histogram,
    leakage_inputs,
    load_sequences,
    save_sequences,
    write_legacy_sequences,
)
from lvm_pipeline.defs.checks import check_result
from lvm_pipeline.defs.resources import PostgresResource
from lvm_pipeline.gates.leakage import check_leakage
from lvm_pipeline.markdown import md_table
from lvm_pipeline.validation.eligibility import MixedSegmentationError, bank_batches

GROUP = "datasets"


class OrderedVectorsConfig(Config):
    legacy_npz: bool = Field(default=False, description="Also write the predecessor's ordered NPZ (loads the bank whole).")
    segmentation_mode: Literal["single", "sentence", "packed"] = Field(
        default="single", description="single: the passing batches must share one mode (else the run fails, saying "
                                      "which); sentence / packed: only the batches segmented in that mode.")


@asset(group_name=GROUP, kinds={"numpy", "parquet"})
def ordered_vectors(context: AssetExecutionContext, config: OrderedVectorsConfig,
                    database: PostgresResource) -> MaterializeResult:
    """Every batch whose blocking gates passed, ordered (batch, article, position), streamed into the bank files.

    Decided from the gate results recorded in PostgreSQL, so a batch that failed, was never
    checked, changed since it was checked, or was excluded on purpose never gets in. A bank holds
    one segmentation mode, as it holds one encoder.
    """
    out_dir = settings().exports_dir
    with database.connect() as conn:
        try:
            verdicts = bank_batches(validation.batch_eligibility(conn),
                                    None if config.segmentation_mode == "single" else config.segmentation_mode)
        except MixedSegmentationError as exc:
            raise Failure(description=str(exc)) from exc
        included = [(v.batch_id, v.content_hash) for v in verdicts if v.included]
        export = export_bank(conn, included, out_dir, legacy_npz=config.legacy_npz)
    left_out = [v for v in verdicts if not v.included]
    if left_out:
        context.log.warning(f"left out {len(left_out)} batch(es): "
                            + "; ".join(f"{v.batch_id}: {v.reason}" for v in left_out))
    return MaterializeResult(metadata={
        "concepts": export.n_concepts,
        "dimension": export.dimension,
        "version": export.version,
        "batches_included": len(included),
        "batches_left_out": len(left_out),
        "bank_vectors": MetadataValue.path(str(export.vectors_path)),
        "bank_mib": round(export.n_bytes / 2**20, 2),
        **({"npz": MetadataValue.path(str(out_dir / "ordered_vectors.npz"))} if config.legacy_npz else {}),
        "batches": MetadataValue.md(md_table(["batch", "included", "why"], [
            (v.batch_id, "yes" if v.included else "no", v.reason) for v in verdicts])),
    })


class TrainingSequencesConfig(Config):
    train: float = Field(default=0.8, description="Share of articles in train (by a stable hash of the article id).")
    val: float = 0.1
    test: float = 0.1
    salt: str = Field(default="lvm-split-v1", description="Changing it reshuffles every article into new splits.")
    max_context: int = Field(default=32, description="C: a window's context is at most the C concepts before its target.")
    stride: int = Field(default=1, description="Every stride-th position of an article is a window's target.")
    legacy_npz: bool = Field(default=False, description="Also export the predecessor's sequence NPZ per split.")


def sequences_dir():
    return settings().exports_dir / "sequences"


def current_sequences() -> TrainingSequences:
    """The training sequences of the exported bank, as `training_sequences` last wrote them."""
    return load_sequences(open_bank(settings().exports_dir), sequences_dir())


@asset(group_name=GROUP, deps=[ordered_vectors], kinds={"numpy"})
def training_sequences(context: AssetExecutionContext, config: TrainingSequencesConfig) -> MaterializeResult:
    """Article-level train / val / test splits, windows and whole-article sequences as index views over the bank."""
    bank = open_bank(settings().exports_dir)
    sequences = build_sequences(bank, SplitRatios(config.train, config.val, config.test, config.salt),
                                WindowSpec(config.max_context, config.stride))
    out_dir = sequences_dir()
    path = save_sequences(sequences, out_dir)
    legacy = {name: write_legacy_sequences(sequences, name, out_dir / f"{name}_sequences.npz")
              for name in SPLITS} if config.legacy_npz else {}
    bank_bytes = bank.vectors.nbytes
    histogram = {name: context_length_histogram(sequences.windows[name]) for name in SPLITS}
    lengths = sorted({length for h in histogram.values() for length in h})
    return MaterializeResult(metadata={
        "version": sequences.version,
        "bank_version": bank.version,
        **{f"{name}_windows": len(sequences.windows[name]) for name in SPLITS},
        **{f"{name}_articles": len(sequences.articles[name]) for name in SPLITS},
        **{f"dropped_duplicates_{name}": sequences.dropped_duplicates[name] for name in SPLITS if name != "train"},
        "index_bytes": path.stat().st_size,
        "index_bytes_per_bank_byte": round(path.stat().st_size / max(bank_bytes, 1), 4),
        "context_lengths": MetadataValue.md(md_table(["context length", *SPLITS], [
            (length, *(histogram[name].get(length, 0) for name in SPLITS)) for length in lengths])),
        **{f"legacy_{name}_npz": MetadataValue.path(str(p)) for name, p in legacy.items()},
    })


@asset_check(asset=training_sequences, blocking=True,
             description="blocking: no article in two splits, no val/test target that is a train text, no window across articles")
def leakage() -> AssetCheckResult:
    sequences = current_sequences()
    return check_result(check_leakage(**leakage_inputs(sequences)), blocking=True)

