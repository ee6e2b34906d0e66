"""Runs left STARTED by a worker that died: found by the worker's pid and marked FAILURE (`lvm-pipeline dev` does it
when it starts and when it stops)."""

from __future__ import annotations

import socket

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from lvm_pipeline.defs.sensors import HOST_TAG
from lvm_pipeline.processes import process_alive


def fail_runs_whose_worker_is_gone(instance) -> list[str]:
    """Mark FAILURE (or CANCELED) the unfinished runs started on this host whose worker process is gone; their ids.

    A killed `dagster dev` or CLI leaves its runs STARTED for ever, each holding a slot of the run queue, and Dagster's
    run monitoring cannot tell: the DefaultRunLauncher does not check a run worker's health. The worker is the
    process that wrote the run's RUN_START event; only runs tagged with this host (HOST_TAG) are looked at. A run
    marked FAILURE this way did not fail a step, so the sensors' runs are retried (dagster.yaml's run_retries).
    """
    gone = []
    unfinished = RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING],
                            tags={HOST_TAG: socket.gethostname()})
    for record in instance.get_run_records(unfinished):
        run = record.dagster_run
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        pid = starts[-1].dagster_event.pid if starts and starts[-1].dagster_event else None
        if pid is None or process_alive(pid):
            continue
        message = f"The run's worker process (pid {pid}) is gone: marked {{}} by lvm-pipeline dev."
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message.format("CANCELED"))
        else:
            instance.report_run_failed(run, message.format("FAILURE"))
        gone.append(run.run_id)
    return gone
