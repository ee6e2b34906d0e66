"""The per-batch phase report: GO / WARN / STOP with figures, findings and next steps."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from lvm_pipeline import validation
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import PostgresResource
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
