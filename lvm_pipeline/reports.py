"""The per-batch phase report (the predecessor's template): summary, metrics, findings, decision, next steps."""

from __future__ import annotations

from dataclasses import dataclass

from lvm_pipeline.validation import GATES, GateStatus, blocking_outcome

GATE_ORDER = {gate.name: i for i, gate in enumerate(GATES)}

NEXT_STEPS = {
    "STOP": ["Read the failed gates' worst examples (check `report` metadata in the UI, or `lvm-pipeline gates --batch {b}`).",
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


def decide(statuses: list[GateStatus]) -> tuple[str, str]:
    """GO / WARN / STOP for a batch from its latest gate results, with the reason."""
    stops, missing = blocking_outcome(statuses)
    warns = [s for s in statuses if s.current and (s.decision == "WARN" or (s.decision == "STOP" and not s.blocking))]
    if stops:
        return "STOP", "; ".join(f"{s.gate}: {s.summary}" for s in stops)
    if missing:
        return "STOP", "blocking gates not evaluated for the current file: " + ", ".join(missing)
    if warns:
        return "WARN", "; ".join(f"{s.gate}: {s.summary}" for s in warns)
    return "GO", "every gate passed"


def phase_report(batch_id: str, statuses: list[GateStatus]) -> PhaseReport:
    decision, rationale = decide(statuses)
    rows = [f"| {s.gate} | {'blocking' if s.blocking else 'warn only'} | {s.decision} | {s.summary} |"
            for s in sorted(statuses, key=lambda s: GATE_ORDER[s.gate])]
    findings = [f"- **{s.gate}** ({s.decision}): {s.summary}" for s in statuses if s.decision != "GO"]
    lines = [
        f"# Phase report: batch `{batch_id}`",
        "",
        "## Summary",
        f"Decision **{decision}**: {rationale}.",
        "",
        "## Metrics",
        "| gate | kind | status | actual vs target |",
        "|---|---|---|---|",
        *rows,
        "",
        "## Key findings",
        *(findings or ["- every gate is GO"]),
        "",
        f"## Decision: {decision}",
        rationale,
        "",
        "## Next steps",
        *[f"- {step.format(b=batch_id)}" for step in NEXT_STEPS[decision]],
    ]
    return PhaseReport(batch_id, decision, rationale, "\n".join(lines))
