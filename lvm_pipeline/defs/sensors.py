"""landing_sensor: registers each new or changed landing file as a batch partition and runs it."""

import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, define_asset_job, sensor

from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import LandingResource, PostgresResource
from lvm_pipeline.landing import scan_landing

ingest_batch_job = define_asset_job("ingest_batch", selection=ingestion_assets, partitions_def=batches,
                                    description="parse -> chunk -> embed one landing batch")

def _ingested_hashes(database: PostgresResource) -> dict[str, str]:
    """batch id -> content hash of batches fully ingested (by a run or by `lvm-pipeline ingest`)."""
    with database.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT batch_id, content_hash FROM batch WHERE status = 'embedded'")
        return dict(cur.fetchall())

@sensor(job=ingest_batch_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def landing_sensor(context: SensorEvaluationContext, landing: LandingResource,
                   database: PostgresResource) -> SensorResult:
    """Watch the landing folder; a file whose content hash changed is re-ingested under the same batch."""
    scan = scan_landing(landing.resolved_path(), json.loads(context.cursor) if context.cursor else {})
    done = _ingested_hashes(database)
    todo = [(name, digest) for name, digest in scan.new + scan.changed if done.get(name) != digest]
    already = sorted({name for name, _ in scan.new + scan.changed} - {name for name, _ in todo})
    message = scan.summary() + "".join(f"\n  already ingested with this content: {name}" for name in already)
    context.log.info(message)

    existing = set(context.instance.get_dynamic_partitions(batches.name))
    to_add = sorted({name for name, _ in scan.new + scan.changed} - existing)
    return SensorResult(
        run_requests=[RunRequest(partition_key=name, run_key=f"{name}@{digest[:16]}",
                                 tags={"lvm/content_sha256": digest}) for name, digest in todo],
        dynamic_partitions_requests=[batches.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(scan.state),
        skip_reason=None if todo else message,
    )
