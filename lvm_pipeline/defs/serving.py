"""`lvm_onnx`: each family's current best checkpoint exported to ONNX (float and INT8) with its parity to PyTorch on the
test queries (`lvm_pipeline.serving.onnx_export`). A family that cannot be exported materializes anyway, saying why.
Docs: docs/SERVING.md."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from lvm_pipeline.defs.datasets import current_sequences, sequences_dir
from lvm_pipeline.defs.resources import EncoderResource
from lvm_pipeline.defs.training import current_run, lvm_checkpoint, model_families
from lvm_pipeline.serving.onnx_export import backend_paths, export_checkpoint


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
