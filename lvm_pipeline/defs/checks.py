"""The STOP/GO gates as asset checks, one per gate of `lvm_pipeline.validation.GATES`.

A STOP of a blocking gate is a failed ERROR check: with blocking=True Dagster skips what depends on
the asset in the same run. A WARN (or a warn-only gate's STOP) is a failed WARN check, which never
blocks. An informational gate's check always passes and carries its figures. Every result is also
recorded in PostgreSQL (`gate_result`), which is what decides across runs.
"""

import dataclasses
import typing
import warnings

import pydantic
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    Config,
    MetadataValue,
    asset_check,
)
from dagster._utils.warnings import PreviewWarning

from lvm_pipeline import validation
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.resources import EncoderResource, PostgresResource
from lvm_pipeline.gates import GateResult


def check_result(result: GateResult, blocking: bool) -> AssetCheckResult:
    """What the UI shows for a gate: pass/fail, severity, figures, thresholds, worst examples."""
    stop = result.decision == "STOP"
    return AssetCheckResult(
        passed=result.decision == "GO",
        severity=AssetCheckSeverity.ERROR if stop and blocking else AssetCheckSeverity.WARN,
        description=f"{result.decision}: {result.summary}" if result.graded else result.summary,
        metadata={
            "decision": result.decision if result.graded else "not graded",
            **{name: value for name, value in result.figures.items() if isinstance(value, (int, float))},
            "thresholds": MetadataValue.json(result.thresholds),
            "report": MetadataValue.md(result.markdown()),
        },
    )


def thresholds_config(gate: validation.Gate) -> type[Config]:
    """A Dagster Config class with the gate's thresholds as fields: set them per run in the launchpad."""
    types = typing.get_type_hints(gate.thresholds)
    fields = {f.name: (types[f.name], f.default) for f in dataclasses.fields(gate.thresholds)}
    return pydantic.create_model(f"{gate.thresholds.__name__}Config", __base__=Config, **fields)


def build_gate_check(gate: validation.Gate) -> AssetChecksDefinition:
    config_class = thresholds_config(gate)

    @asset_check(name=gate.name, asset=gate.asset, blocking=gate.blocking, partitions_def=batches,
                 description=f"{gate.kind} gate {gate.name} (see docs/GATES.md)")
    def _check(context: AssetCheckExecutionContext, config: config_class, database: PostgresResource,
               encoder: EncoderResource) -> AssetCheckResult:
        with database.connect() as conn:
            result = validation.evaluate_gate(conn, context.partition_key, gate.name,
                                              encoder.get() if gate.needs_encoder else None,
                                              run_id=context.run.run_id,
                                              thresholds=gate.thresholds(**config.model_dump()))
        return check_result(result, gate.blocking)

    return _check


with warnings.catch_warnings():  # partitioned checks are a preview feature of Dagster 1.13: we rely on it knowingly
    warnings.simplefilter("ignore", PreviewWarning)
    gate_checks = [build_gate_check(gate) for gate in validation.GATES]
