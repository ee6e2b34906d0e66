"""Alerts for on-call: every STOP and WARN, once, as a log line and a JSON file (the Dagster layer adds Slack).

`gate_result` is the outbox: `send_pending_alerts` looks at every result not yet handled, alerts
where one is due (`needs_alert`), and marks it handled, so a result alerts once whoever runs the
step (the gate sensor, or the CLI after its own runs) and nothing is lost if a send fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from lvm_pipeline.db.gates import GateStatus, mark_notified, unnotified_results
from lvm_pipeline.files import atomic_write
from lvm_pipeline.validation.eligibility import needs_alert


def alert_message(status: GateStatus) -> str:
    kind = "STOP (blocking)" if status.decision == "STOP" and status.blocking else status.decision
    return f"[lvm_pipeline] batch {status.batch_id}: gate {status.gate} {kind}: {status.summary}"


def write_alert(alert_dir: Path, status: GateStatus) -> Path:
    """One JSON file per alert, named so that a listing sorts by time."""
    stamp = re.sub(r"[^0-9]", "", status.evaluated_at)[:20]
    path = Path(alert_dir) / f"{stamp}_{re.sub(r'[^A-Za-z0-9._-]', '_', status.batch_id)}_{status.gate}.json"
    body = {"message": alert_message(status), "batch_id": status.batch_id, "gate": status.gate,
            "decision": status.decision, "blocking": status.blocking, "summary": status.summary,
            "figures": status.figures, "evaluated_at": status.evaluated_at}
    return atomic_write(path, lambda handle: handle.write(json.dumps(body, indent=2).encode()))


def send_pending_alerts(conn, send: Callable[[GateStatus], object]) -> list[GateStatus]:
    """Alert (with `send`) on every unhandled result that needs one, marking each handled; return those sent."""
    sent = []
    for result_id, status in unnotified_results(conn):
        if needs_alert(status):
            send(status)
            sent.append(status)
        mark_notified(conn, result_id)
    return sent
