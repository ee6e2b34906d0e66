"""Sensors: landing files -> batch runs; gate results -> alerts and phase reports; passing batches -> ordered_vectors.

Their runs are retried (dagster.yaml's run_retries) only when the run's worker crashed, never when a step failed.
"""

import hashlib
import json
import socket

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, define_asset_job, sensor

from lvm_pipeline import validation
from lvm_pipeline.db.batches import ingested_hashes
from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.benchmark import downstream_assets
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import AlertResource, LandingResource, PostgresResource
from lvm_pipeline.defs.validated import phase_report
from lvm_pipeline.landing import scan_landing
from lvm_pipeline.validation.alerts import send_pending_alerts

HOST_TAG = "lvm/host"  # the machine the run's worker runs on: there, `lvm-pipeline dev` can tell that it died
CRASH_RETRIES = 2


def sensor_run_tags() -> dict[str, str]:
    """Tags of every run a sensor requests: retried up to CRASH_RETRIES times when its worker crashed, never when
    a step failed (a gate's STOP, a bad file: it would fail the same way again); and this host (HOST_TAG)."""
    return {"dagster/max_retries": str(CRASH_RETRIES), "dagster/retry_on_asset_or_op_failure": "false",
            HOST_TAG: socket.gethostname()}


ingest_batch_job = define_asset_job("ingest_batch", selection=ingestion_assets, partitions_def=batches,
                                    description="parse -> chunk -> embed -> TMD codes for one landing batch, with its gates")


@sensor(job=ingest_batch_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def landing_sensor(context: SensorEvaluationContext, landing: LandingResource,
                   database: PostgresResource) -> SensorResult:
    """Watch the landing folder; a file whose content hash changed is re-ingested under the same batch."""
    scan = scan_landing(landing.resolved_path(), json.loads(context.cursor) if context.cursor else {})
    with database.connect() as conn, conn.cursor() as cur:
        done = ingested_hashes(cur)
    todo = [(name, digest) for name, digest in scan.new + scan.changed if done.get(name) != digest]
    already = sorted({name for name, _ in scan.new + scan.changed} - {name for name, _ in todo})
    message = scan.summary() + "".join(f"\n  already ingested with this content: {name}" for name in already)
    context.log.info(message)

    existing = set(context.instance.get_dynamic_partitions(batches.name))
    to_add = sorted({name for name, _ in scan.new + scan.changed} - existing)
    return SensorResult(
        run_requests=[RunRequest(partition_key=name, run_key=f"{name}@{digest[:16]}",
                                 tags={**sensor_run_tags(), "lvm/content_sha256": digest}) for name, digest in todo],
        dynamic_partitions_requests=[batches.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(scan.state),
        skip_reason=None if todo else message,
    )


@sensor(asset_selection=[phase_report], minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def gate_sensor(context: SensorEvaluationContext, database: PostgresResource, alerts: AlertResource) -> SensorResult:
    """React to new gate results: alert on every STOP and WARN (once), and refresh the batch's phase report."""
    with database.connect() as conn:
        send_pending_alerts(conn, lambda status: alerts.send(status, context.log))
        fresh = validation.gate_results_since(conn, int(context.cursor or 0))
    if not fresh:
        return SensorResult(skip_reason="no new gate results")
    last_id = fresh[-1][0]
    batch_ids = sorted({status.batch_id for _, status in fresh})
    return SensorResult(
        run_requests=[RunRequest(partition_key=b, run_key=f"phase_report:{b}:{last_id}", tags=sensor_run_tags())
                      for b in batch_ids],
        cursor=str(last_id),
    )


@sensor(asset_selection=downstream_assets, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def ordered_vectors_sensor(context: SensorEvaluationContext, database: PostgresResource) -> SensorResult:
    """Rebuild the bank, and what follows it, whenever the set of passing batches (or their content) changes."""
    with database.connect() as conn:
        included = [(v.batch_id, v.content_hash) for v in validation.batch_eligibility(conn) if v.included]
    key = hashlib.sha256(json.dumps(included).encode()).hexdigest()[:16]
    if key == context.cursor:
        return SensorResult(skip_reason=f"the {len(included)} passing batches have not changed")
    context.log.info(f"{len(included)} passing batches: {', '.join(b for b, _ in included) or 'none'}")
    return SensorResult(run_requests=[RunRequest(run_key=f"ordered_vectors:{key}", tags=sensor_run_tags())], cursor=key)
