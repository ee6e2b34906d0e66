"""The `gate_result` table: every gate evaluation, the latest per batch and gate, and the alert outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg2 import sql


@dataclass(frozen=True)
class GateStatus:
    batch_id: str
    gate: str
    decision: str
    blocking: bool
    summary: str
    figures: dict
    evaluated_at: str
    current: bool  # judged the batch's current content


# g: gate_result, b: batch
_STATUS_COLUMNS = sql.SQL("""g.batch_id, g.gate, g.decision, g.blocking, g.summary, g.figures, g.evaluated_at::text,
                      g.content_hash = b.content_hash""")


def record_gate_result(cur, batch_id: str, content_hash: str, gate: str, blocking: bool, result: dict,
                       run_id: str | None) -> None:
    """Insert one evaluation; `result` is GateResult.to_json() (decision, summary, figures, thresholds, worst)."""
    cur.execute(
        """INSERT INTO gate_result (batch_id, content_hash, gate, decision, blocking, summary, figures,
                                    thresholds, worst, run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (batch_id, content_hash, gate, result["decision"], blocking, result["summary"],
         json.dumps(result["figures"]), json.dumps(result["thresholds"]), json.dumps(result["worst"]), run_id))


def gate_status(conn, batch_id: str | None = None) -> list[GateStatus]:
    """The latest result of every gate for every batch (or one batch)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("""SELECT DISTINCT ON (g.batch_id, g.gate) {}
               FROM gate_result g JOIN batch b USING (batch_id)
               WHERE %(batch)s::text IS NULL OR g.batch_id = %(batch)s
               ORDER BY g.batch_id, g.gate, g.evaluated_at DESC, g.gate_result_id DESC""").format(_STATUS_COLUMNS),
            {"batch": batch_id})
        return [GateStatus(*row) for row in cur.fetchall()]


def gate_results_since(conn, after_id: int) -> list[tuple[int, GateStatus]]:
    """Results recorded after `after_id` (a gate_result_id), oldest first: what a watcher has not seen."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT g.gate_result_id, {} FROM gate_result g JOIN batch b USING (batch_id) "
                            "WHERE g.gate_result_id > %s ORDER BY g.gate_result_id").format(_STATUS_COLUMNS),
                    (after_id,))
        return [(row[0], GateStatus(*row[1:])) for row in cur.fetchall()]


def unnotified_results(conn) -> list[tuple[int, GateStatus]]:
    """Results the alert step has not looked at yet, oldest first."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT g.gate_result_id, {} FROM gate_result g JOIN batch b USING (batch_id) "
                            "WHERE g.notified_at IS NULL ORDER BY g.gate_result_id").format(_STATUS_COLUMNS))
        return [(row[0], GateStatus(*row[1:])) for row in cur.fetchall()]


def mark_notified(conn, result_id: int) -> None:
    """The alert step has handled this result (sent its alert, or found none due); commits."""
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE gate_result SET notified_at = now() WHERE gate_result_id = %s", (result_id,))
