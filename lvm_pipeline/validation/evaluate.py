"""Run one gate on one batch from PostgreSQL and record the result in `gate_result`."""

from __future__ import annotations

from typing import Any

from lvm_pipeline.db.batches import content_hash
from lvm_pipeline.db.gates import record_gate_result
from lvm_pipeline.gates import GateResult
from lvm_pipeline.validation.registry import GATES_BY_NAME


def evaluate_gate(conn, batch_id: str, gate_name: str, encoder=None, run_id: str | None = None,
                  thresholds: Any = None) -> GateResult:
    """Run one gate on one batch (its default thresholds unless given) and record the result."""
    gate = GATES_BY_NAME[gate_name]
    with conn.cursor() as cur:
        digest = content_hash(cur, batch_id)  # BatchNotFoundError for an unknown batch
    result = gate.run(gate.load(conn, batch_id), encoder, thresholds or gate.thresholds())
    with conn, conn.cursor() as cur:
        record_gate_result(cur, batch_id, digest, gate.name, gate.blocking, result.to_json(), run_id)
    return result
