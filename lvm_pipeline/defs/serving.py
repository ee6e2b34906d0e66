"""`lvm_onnx`: each family's current best checkpoint exported to ONNX (float and INT8) with its parity to PyTorch on the
test queries (`lvm_pipeline.serving.onnx_export`); a family that cannot be exported materializes anyway, saying why.
`deployment_readiness`: the predecessor's deployment checklist and production criteria graded on the report's best
model, served and loaded for real (`lvm_pipeline.serving.readiness`). Docs: docs/SERVING.md."""

import json
from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from lvm_pipeline.config import settings
from lvm_pipeline.defs.benchmark import benchmark_report
from lvm_pipeline.defs.datasets import current_sequences, sequences_dir
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import current_run, lvm_checkpoint, model_families
from lvm_pipeline.files import atomic_write
from lvm_pipeline.inference import REPORT_JSON, report_best_checkpoint
from lvm_pipeline.serving.onnx_export import export_checkpoint
from lvm_pipeline.serving.readiness import grade, measure_deployment
from lvm_pipeline.training.checkpoint import backend_paths

READINESS_FILES = ("deployment_readiness.md", "deployment_readiness.json")


@asset(partitions_def=model_families, deps=[lvm_checkpoint], group_name="serving", kinds={"onnx"})
def lvm_onnx(context: AssetExecutionContext, encoder: EncoderResource) -> MaterializeResult:
    """The family's best checkpoint as ONNX (dynamic batch and sequence axes) and INT8, with Hit@5 parity."""
    checkpoint = current_run(context.partition_key) / "best.safetensors"
    sequences = current_sequences()
    try:
        report = export_checkpoint(checkpoint, sequences, encoder.for_bank(sequences.bank, context.log), sequences_dir())
    except Exception as error:  # an operator the exporter or onnxruntime lacks: said here, not a failed run
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        context.log.warning(f"{context.partition_key} cannot be exported to ONNX: {reason}")
        return MaterializeResult(metadata={"exported": False, "reason": reason})
    figures = {f.backend: f for f in report.backends}
    return MaterializeResult(metadata={
        "exported": True,
        "parity": report.parity,
        "fixed_length": report.fixed_length or 0,
        "hit_at_5_torch": figures["torch"].hit_at_5,
        "hit_at_5_onnx": figures["onnx"].hit_at_5,
        "hit_at_5_int8": figures["onnx-int8"].hit_at_5,
        "max_abs_diff_onnx": figures["onnx"].max_abs_diff,
        "int8_speedup_vs_torch": round(figures["torch"].ms_per_1k_queries / figures["onnx-int8"].ms_per_1k_queries, 2),
        "quantized": MetadataValue.json(report.quantized),
        "report": MetadataValue.md(report.markdown()),
        "onnx": MetadataValue.path(str(backend_paths(checkpoint)["onnx"])),
    })


class DeploymentReadinessConfig(Config):
    load_seconds: float = Field(default=10.0, gt=0, le=600, description="Seconds of each load test (vectors in at "
                                "1,000 QPS, then texts in); benchmarks/serve.py runs the 60-second one.")
    texts_qps: float = Field(default=5.0, gt=0, description="The texts-in rate, for the latency criterion: 15 sentences/s, "
                             "within what the encoder serves on 2 cores with the text views (docs/BENCHMARKS.md).")
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(default="torch", description="What serve runs the model on.")
    workers: int = Field(default=2, ge=1, description="serve's --workers (one thread each): the fastest measured on "
                         "2 cores (docs/BENCHMARKS.md).")
    search: Literal["exact", "ivf"] = Field(default="ivf", description="serve's --search: ivf holds 1,000 QPS on the "
                                            "demo bank, exact does not (docs/SERVING.md has its cost in Hit@5).")


@asset(deps=[benchmark_report, lvm_onnx], group_name="serving", kinds={"markdown", "json"})
def deployment_readiness(context: AssetExecutionContext, config: DeploymentReadinessConfig,
                         encoder: EncoderResource) -> MaterializeResult:
    """Each checklist item and production criterion with its measured figure, target and GO/STOP, and the verdict
    (STOP: ship the baseline instead)."""
    paths = settings()
    checkpoint = report_best_checkpoint(paths.reports_dir, paths.checkpoints_dir)
    sequences = current_sequences()
    report = json.loads((paths.reports_dir / REPORT_JSON).read_text())
    context.log.info(f"serving {checkpoint} ({config.backend}) and loading it for {config.load_seconds:g} s a scenario")
    readiness = grade(measure_deployment(checkpoint, report, sequences, encoder.for_bank(sequences.bank, context.log),
                                         sequences_dir(), config.load_seconds, config.backend, config.texts_qps,
                                         config.workers, config.search))
    markdown, as_json = (paths.reports_dir / name for name in READINESS_FILES)
    atomic_write(markdown, lambda f: f.write(readiness.markdown().encode()))
    atomic_write(as_json, lambda f: f.write(readiness.to_json().encode()))
    context.log.info(f"deployment readiness: {readiness.verdict}: {readiness.reason}")
    return MaterializeResult(metadata={
        "verdict": readiness.verdict,
        "reason": readiness.reason,
        "rows_go": sum(row.go for row in readiness.rows),
        "rows": len(readiness.rows),
        "report": MetadataValue.md(readiness.markdown()),
        "markdown": MetadataValue.path(str(markdown)),
        "json": MetadataValue.path(str(as_json)),
    })
