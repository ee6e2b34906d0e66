"""Assets past the gates: the per-batch phase report, and the ordered bank of every batch that passed."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from lvm_pipeline import validation
from lvm_pipeline.config import settings
from lvm_pipeline.datasets.ordered import export_ordered
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import PostgresResource
from lvm_pipeline.markdown import md_table
from lvm_pipeline.validation.phase_report import phase_report as build_phase_report


@asset(partitions_def=batches, group_name="validation", kinds={"markdown"})
def phase_report(context: AssetExecutionContext, database: PostgresResource) -> MaterializeResult:
    """GO / WARN / STOP for one batch with its figures, findings and next steps (from the recorded gates).

    Not downstream of the checked assets on purpose: a STOPped batch gets its report too. The
    gate sensor requests it whenever new gate results arrive.
    """
    with database.connect() as conn:
        report = build_phase_report(context.partition_key, validation.gate_status(conn, context.partition_key))
    return MaterializeResult(metadata={"decision": report.decision, "rationale": report.rationale,
                                       "report": MetadataValue.md(report.markdown)})


@asset(group_name="validation", kinds={"numpy", "parquet"})
def ordered_vectors(context: AssetExecutionContext, database: PostgresResource) -> MaterializeResult:
    """Every batch whose blocking gates passed, ordered (batch, article, position): legacy NPZ + bank.

    Decided from the gate results recorded in PostgreSQL, so a batch that failed, was never
    checked, changed since it was checked, or was excluded on purpose never gets in.
    """
    with database.connect() as conn:
        verdicts = validation.batch_eligibility(conn)
        included = [v.batch_id for v in verdicts if v.included]
        export = export_ordered(conn, included, settings().exports_dir)
    left_out = [v for v in verdicts if not v.included]
    if left_out:
        context.log.warning(f"left out {len(left_out)} batch(es): " + "; ".join(f"{v.batch_id}: {v.reason}" for v in left_out))
    return MaterializeResult(metadata={
        "concepts": export.n_concepts,
        "dimension": export.dimension,
        "batches_included": len(included),
        "batches_left_out": len(left_out),
        "npz": MetadataValue.path(str(export.npz_path)),
        "bank_vectors": MetadataValue.path(str(export.bank_vectors_path)),
        "batches": MetadataValue.md(md_table(["batch", "included", "why"],
                                             [(v.batch_id, "yes" if v.included else "no", v.reason) for v in verdicts])),
    })
