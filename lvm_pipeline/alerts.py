"""Alerts for on-call: a log line and a JSON file per failed gate (Slack is added in the Dagster layer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lvm_pipeline.validation import GateStatus


def alert_message(status: GateStatus) -> str:
    kind = "STOP (blocking)" if status.decision == "STOP" and status.blocking else status.decision
    return f"[lvm_pipeline] batch {status.batch_id}: gate {status.gate} {kind}: {status.summary}"


def write_alert(alert_dir: Path, status: GateStatus) -> Path:
    """One JSON file per alert, named so that a listing sorts by time."""
    alert_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9]", "", status.evaluated_at)[:20]
    path = alert_dir / f"{stamp}_{re.sub(r'[^A-Za-z0-9._-]', '_', status.batch_id)}_{status.gate}.json"
    path.write_text(json.dumps({"message": alert_message(status), "batch_id": status.batch_id, "gate": status.gate,
                                "decision": status.decision, "blocking": status.blocking, "summary": status.summary,
                                "figures": status.figures, "evaluated_at": status.evaluated_at}, indent=2))
    return path
