"""The Dagster layer: assets, sensors, resources. `dagster dev` loads `defs` from here."""

from dagster import Definitions

from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.resources import EncoderResource, LandingResource, PostgresResource
from lvm_pipeline.defs.sensors import ingest_batch_job, landing_sensor


def resources() -> dict:
    """Defaults read the environment when used (see lvm_pipeline.config)."""
    return {"database": PostgresResource(), "encoder": EncoderResource(), "landing": LandingResource()}


defs = Definitions(
    assets=ingestion_assets,
    jobs=[ingest_batch_job],
    sensors=[landing_sensor],
    resources=resources(),
)
