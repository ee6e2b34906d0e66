"""The per-batch phase report (the predecessor's template): summary, metrics, findings, decision, next steps."""

from __future__ import annotations

from dataclasses import dataclass

from lvm_pipeline.db.gates import GateStatus
from lvm_pipeline.gates.result import fmt
from lvm_pipeline.validation.eligibility import batch_decision
from lvm_pipeline.validation.registry import GATES, GATES_BY_NAME

GATE_ORDER = {gate.name: i for i, gate in enumerate(GATES)}
KIND_LABEL = {"blocking": "blocking", "warn": "warn only", "info": "informational"}

NEXT_STEPS = {
    "STOP": ["Read the failed gates' worst examples (check `report` metadata in the UI, or "
             "`lvm-pipeline gates --batch {b}`).",
             "Fix the source file and drop it into the landing folder again (same name): the sensor re-ingests it.",
             "Or keep it out on purpose: `lvm-pipeline exclude {b} --reason '...'`."],
    "WARN": ["The batch enters training data; look at the WARN gates before the next training run."],
    "GO": ["Nothing to do: the batch is part of `ordered_vectors`."],
}


@dataclass(frozen=True)
class PhaseReport:
    batch_id: str
    decision: str
    rationale: str
    markdown: str


def phase_report(batch_id: str, statuses: list[GateStatus]) -> PhaseReport:
    decision, rationale = batch_decision(statuses)
    ordered = sorted(statuses, key=lambda s: GATE_ORDER.get(s.gate, len(GATE_ORDER)))
    kind = {s.gate: GATES_BY_NAME[s.gate].kind if s.gate in GATES_BY_NAME else "warn" for s in ordered}
    rows = [f"| {s.gate} | {KIND_LABEL[kind[s.gate]]} | {s.decision} | {s.summary} |" for s in ordered]
    findings = [f"- **{s.gate}** ({s.decision}): {s.summary}" for s in ordered if s.decision != "GO"]
    informational = [f"- **{s.gate}**: " + ", ".join(f"{k}={fmt(v)}" for k, v in s.figures.items())
                     for s in ordered if kind[s.gate] == "info"]
    lines = [
        f"# Phase report: batch `{batch_id}`", "",
        "## Summary", f"Decision **{decision}**: {rationale}.", "",
        "## Metrics", "| gate | kind | status | actual vs target |", "|---|---|---|---|", *rows, "",
        "## Key findings", *(findings or ["- every graded gate is GO"]), "",
        *(["## Informational figures (not graded)", *informational, ""] if informational else []),
        f"## Decision: {decision}", rationale, "",
        "## Next steps", *[f"- {step.format(b=batch_id)}" for step in NEXT_STEPS[decision]],
    ]
    return PhaseReport(batch_id, decision, rationale, "\n".join(lines))
