"""Which batches may enter training data, and a batch's overall GO / WARN / STOP, from the recorded gate results."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from lvm_pipeline.db.batches import batch_states
from lvm_pipeline.db.gates import GateStatus, gate_status
from lvm_pipeline.validation.registry import GATES, GATES_BY_NAME


@dataclass(frozen=True)
class Eligibility:
    batch_id: str
    content_hash: str
    included: bool
    reason: str


def blocking_outcome(statuses: list[GateStatus]) -> tuple[list[GateStatus], list[str]]:
    """Of one batch's latest results: the blocking gates that STOPped, and those not evaluated on its current file."""
    current = {s.gate: s for s in statuses if s.current}
    blocking = [g.name for g in GATES if g.blocking]
    stopped = [current[name] for name in blocking if name in current and current[name].decision == "STOP"]
    return stopped, [name for name in blocking if name not in current]


def batch_decision(statuses: list[GateStatus]) -> tuple[str, str]:
    """GO / WARN / STOP for a batch from its latest gate results, with the reason."""
    stops, missing = blocking_outcome(statuses)
    if stops:
        return "STOP", "; ".join(f"{s.gate}: {s.summary}" for s in stops)
    if missing:
        return "STOP", "blocking gates not evaluated for the current file: " + ", ".join(missing)
    warns = [s for s in statuses if s.current and s.decision != "GO"]  # a STOP of a warn-only gate warns
    if warns:
        return "WARN", "; ".join(f"{s.gate}: {s.summary}" for s in warns)
    return "GO", "every gate passed"


def needs_alert(status: GateStatus) -> bool:
    """STOP and WARN alert; informational gates never do (they are never graded)."""
    gate = GATES_BY_NAME.get(status.gate)
    return status.decision != "GO" and (gate is None or gate.kind != "info")


def batch_eligibility(conn) -> list[Eligibility]:
    """For every batch: may it enter training data, and why (not)."""
    with conn.cursor() as cur:
        states = batch_states(cur)
    latest: dict[str, list[GateStatus]] = {}
    for status in gate_status(conn):
        latest.setdefault(status.batch_id, []).append(status)
    verdicts = []
    for state in states:
        verdict = partial(Eligibility, state.batch_id, state.content_hash)
        stopped, missing = blocking_outcome(latest.get(state.batch_id, []))
        if state.excluded_reason:
            verdicts.append(verdict(False, f"excluded on purpose: {state.excluded_reason}"))
        elif state.status != "embedded":
            verdicts.append(verdict(False, f"not fully ingested (stage: {state.status})"))
        elif stopped:
            verdicts.append(verdict(False, "STOP: " + "; ".join(f"{s.gate}: {s.summary}" for s in stopped)))
        elif missing:
            verdicts.append(verdict(False, "not checked for its current content: " + ", ".join(missing)))
        else:
            verdicts.append(verdict(True, "all blocking gates passed"))
    return verdicts
