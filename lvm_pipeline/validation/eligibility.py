"""Which batches may enter training data, and a batch's overall GO / WARN / STOP, from the recorded gate results."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from lvm_pipeline.db.batches import batch_states
from lvm_pipeline.db.gates import GateStatus, gate_status
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.validation.registry import GATES, GATES_BY_NAME


@dataclass(frozen=True)
class Eligibility:
    batch_id: str
    content_hash: str
    included: bool
    reason: str
    segmentation_mode: str | None = None


class MixedSegmentationError(PipelineError):
    """The passing batches were segmented in more than one mode: a bank holds one."""


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
        verdict = partial(Eligibility, state.batch_id, state.content_hash, segmentation_mode=state.segmentation_mode)
        stopped, missing = blocking_outcome(latest.get(state.batch_id, []))
        if state.excluded_reason:
            verdicts.append(verdict(False, f"excluded on purpose: {state.excluded_reason}"))
        elif stopped:  # before the stage: a STOP on an early asset is why the batch went no further
            verdicts.append(verdict(False, "STOP: " + "; ".join(f"{s.gate}: {s.summary}" for s in stopped)))
        elif state.status != "embedded":
            verdicts.append(verdict(False, f"not fully ingested (stage: {state.status})"))
        elif missing:
            verdicts.append(verdict(False, "not checked for its current content: " + ", ".join(missing)))
        else:
            verdicts.append(verdict(True, "all blocking gates passed"))
    return verdicts


def bank_batches(verdicts: list[Eligibility], segmentation_mode: str | None = None) -> list[Eligibility]:
    """The verdicts for a bank in one segmentation mode: with `segmentation_mode`, passing batches of another mode
    are left out (saying why); without it, passing batches of more than one mode are a MixedSegmentationError."""
    if segmentation_mode is not None:
        return [v if not v.included or v.segmentation_mode == segmentation_mode else
                replace(v, included=False, reason=f"segmented in {v.segmentation_mode} mode; the bank is "
                                                  f"{segmentation_mode} (ordered_vectors' segmentation_mode)")
                for v in verdicts]
    modes: dict[str, list[str]] = {}
    for v in verdicts:
        if v.included:
            modes.setdefault(v.segmentation_mode, []).append(v.batch_id)
    if len(modes) > 1:
        listed = "; ".join(f"{mode}: {len(ids)} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
                           for mode, ids in sorted(modes.items()))
        raise MixedSegmentationError(
            f"the passing batches mix segmentation modes ({listed}): a bank holds one. Re-ingest them in one mode "
            "(`lvm-pipeline ingest --mode MODE FILE`), or set ordered_vectors' segmentation_mode to keep one")
    return verdicts
