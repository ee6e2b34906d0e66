"""STOP/GO gates against PostgreSQL: the registry, running a gate on a batch, eligibility, phase reports, alerts.

The gates themselves are pure functions in `lvm_pipeline.gates`; the SQL is in `lvm_pipeline.db`.
"""

from lvm_pipeline.db.gates import GateStatus, gate_results_since, gate_status
from lvm_pipeline.validation.eligibility import Eligibility, batch_decision, batch_eligibility, blocking_outcome
from lvm_pipeline.validation.evaluate import evaluate_gate
from lvm_pipeline.validation.registry import GATES, GATES_BY_NAME, Gate

__all__ = ["GATES", "GATES_BY_NAME", "Eligibility", "Gate", "GateStatus", "batch_decision", "batch_eligibility",
           "blocking_outcome", "evaluate_gate", "gate_results_since", "gate_status"]
