"""The Dagster layer: assets, gate checks, sensors, resources. `dagster dev` loads `defs` from here."""

from dagster import Definitions

from lvm_pipeline.defs.analogies import vector_arithmetic
from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.benchmark import downstream_assets, downstream_checks, training_assets, training_checks
from lvm_pipeline.defs.checks import gate_checks
from lvm_pipeline.defs.experiments import experiment_comparison, scaling_report
from lvm_pipeline.defs.resources import AlertResource, EncoderResource, LandingResource, PostgresResource
from lvm_pipeline.defs.retrieval import retrieval_benchmark
from lvm_pipeline.defs.sensors import gate_sensor, ingest_batch_job, landing_sensor, ordered_vectors_sensor
from lvm_pipeline.defs.serving import deployment_readiness, lvm_onnx
from lvm_pipeline.defs.training import lvm_variant
from lvm_pipeline.defs.validated import phase_report


def resources() -> dict:
    """Defaults read the environment when used (see lvm_pipeline.config)."""
    return {"database": PostgresResource(), "encoder": EncoderResource(), "landing": LandingResource(),
            "alerts": AlertResource()}


defs = Definitions(
    assets=[*ingestion_assets, phase_report, *downstream_assets, retrieval_benchmark, *training_assets, lvm_variant,
            experiment_comparison, scaling_report, vector_arithmetic, lvm_onnx, deployment_readiness],
    asset_checks=[*gate_checks, *downstream_checks, *training_checks],
    jobs=[ingest_batch_job],
    sensors=[landing_sensor, gate_sensor, ordered_vectors_sensor],
    resources=resources(),
)
