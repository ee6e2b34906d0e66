"""Operations for real: run monitoring and retries from dagster.yaml, the sensors' retry tags, runs whose worker
died, and `lvm-pipeline dev` stopping with nothing of its process group left behind."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus, EventLogEntry, RunsFilter, materialize
from dagster._core.storage.tags import MAX_RETRIES_TAG, RETRY_ON_ASSET_OR_OP_FAILURE_TAG, WILL_RETRY_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.auto_run_reexecution.event_log_consumer import EventLogConsumerDaemon
from dagster._daemon.daemon import MonitoringDaemon
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

from lvm_pipeline.defs import defs, resources
from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.runs import fail_runs_whose_worker_is_gone
from lvm_pipeline.defs.sensors import CRASH_RETRIES, HOST_TAG
from lvm_pipeline.processes import DevProcess
from lvm_pipeline_tests.conftest import PROJECT_ROOT, landing_dir, write_jsonl
from lvm_pipeline_tests.test_dagster import evaluate_sensor


def test_the_instance_monitors_runs_and_retries_only_crashed_ones(dagster_instance):
    instance = dagster_instance  # DagsterInstance.get() on the project's dagster.yaml, as the CLI and dagster dev
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_monitoring_cancel_timeout_seconds == 120
    assert instance.run_monitoring_poll_interval_seconds == 30
    assert instance.run_monitoring_max_resume_run_attempts == 0  # the DefaultRunLauncher cannot resume a run
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 0  # only runs tagged are retried
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    daemons = set(instance.get_required_daemon_types())  # what `dagster dev`'s daemon process runs
    assert {MonitoringDaemon.daemon_type(), EventLogConsumerDaemon.daemon_type()} <= daemons


def test_the_sensors_runs_are_retried_when_the_worker_crashed_never_when_a_step_failed(
        database_url, dagster_instance, vital_records):
    write_jsonl(landing_dir() / "a.jsonl", vital_records[:2])
    (request,) = evaluate_sensor(dagster_instance).run_requests
    assert request.tags[MAX_RETRIES_TAG] == str(CRASH_RETRIES) == "2"
    assert request.tags[RETRY_ON_ASSET_OR_OP_FAILURE_TAG] == "false"
    assert request.tags[HOST_TAG] == socket.gethostname()

    # a bad file fails its step: Dagster decides (WILL_RETRY_TAG, set as the run fails) not to retry it
    (landing_dir() / "empty.jsonl").write_bytes(b"")
    dagster_instance.add_dynamic_partitions(batches.name, ["empty.jsonl"])
    failed = materialize(ingestion_assets, partition_key="empty.jsonl", instance=dagster_instance,
                         resources=resources(), tags=request.tags, raise_on_error=False)
    assert not failed.success
    assert dagster_instance.get_run_by_id(failed.run_id).tags[WILL_RETRY_TAG] == "false"

    # the same run whose worker died (what the code server reports then): retried
    job = defs.resolve_job_def("ingest_batch")
    crashed = dagster_instance.create_run_for_job(job, tags=request.tags)
    dagster_instance.report_run_failed(crashed, "run worker exited unexpectedly")
    assert dagster_instance.get_run_by_id(crashed.run_id).tags[WILL_RETRY_TAG] == "true"


WORKER = """
import json, sys
from dagster import DagsterInstance, materialize
from lvm_pipeline.defs import resources
from lvm_pipeline.defs.assets import ingestion_assets
materialize(ingestion_assets, partition_key=sys.argv[1], instance=DagsterInstance.get(), resources=resources(),
            tags=json.loads(sys.argv[2]))
"""


def monitor_once(instance) -> None:
    """One iteration of dagster-daemon's run monitoring, as the daemon runs it."""
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        errors = [e for e in execute_run_monitoring_iteration(context, logging.getLogger("test")) if e]
    assert not errors, errors


def test_a_run_whose_worker_was_killed_is_marked_failed_and_retried(database_url, dagster_instance, vital_records):
    instance = dagster_instance
    write_jsonl(landing_dir() / "k.jsonl", vital_records[:60])
    result = evaluate_sensor(instance)
    (request,) = result.run_requests
    instance.add_dynamic_partitions(batches.name, ["k.jsonl"])

    # a run worker with the sensor's tags, killed once its run has started
    worker = subprocess.Popen([sys.executable, "-c", WORKER, "k.jsonl", json.dumps(dict(request.tags))],
                              cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not (started := instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker's run never started"
            time.sleep(0.1)
        (run,) = started
        assert fail_runs_whose_worker_is_gone(instance) == []  # its worker is alive: left alone
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    finally:
        worker.kill()
        worker.wait(timeout=30)

    monitor_once(instance)  # the DefaultRunLauncher cannot check a worker: Dagster's monitoring leaves it STARTED
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

    assert fail_runs_whose_worker_is_gone(instance) == [run.run_id]  # what `lvm-pipeline dev` does
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == DagsterRunStatus.FAILURE
    assert failed.tags[WILL_RETRY_TAG] == "true"  # a crash, not a failed step
    assert fail_runs_whose_worker_is_gone(instance) == []


def test_monitoring_fails_a_run_stuck_starting_past_the_configured_timeout(dagster_instance):
    instance = dagster_instance
    job = defs.resolve_job_def("ingest_batch")
    timeout = instance.run_monitoring_start_timeout_seconds
    runs = {}
    for name, ago in (("stuck", timeout + 5), ("starting", timeout - 30)):
        run = instance.create_run_for_job(job)
        instance.handle_new_event(EventLogEntry(  # launched `ago` seconds ago; its worker never came up
            error_info=None, level=logging.DEBUG, user_message="", run_id=run.run_id, timestamp=time.time() - ago,
            dagster_event=DagsterEvent(DagsterEventType.RUN_STARTING.value, job_name=run.job_name)))
        runs[name] = run.run_id
    assert instance.get_run_by_id(runs["stuck"]).status == DagsterRunStatus.STARTING
    monitor_once(instance)
    assert instance.get_run_by_id(runs["stuck"]).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(runs["starting"]).status == DagsterRunStatus.STARTING


# --- lvm-pipeline dev ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, process group) of every process, read from /proc (independently of the CLI's helpers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        found.append((int(stat.parent.name), state, int(ppid), int(group)))
    return found


def live_processes_in_group(pgid: int) -> list[int]:
    return [pid for pid, state, _, group in processes() if group == pgid and state != "Z"]


def test_dev_stops_on_sigterm_and_leaves_no_process_behind(database_url, dagster_instance, tmp_path):
    port = free_port()
    out, err = (tmp_path / "dev.out").open("w+"), (tmp_path / "dev.err").open("w+")
    dev = subprocess.Popen([sys.executable, "-m", "lvm_pipeline.cli", "dev", "--port", str(port)], cwd=PROJECT_ROOT,
                           stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    group = None
    try:
        deadline = time.monotonic() + 150
        while True:
            assert dev.poll() is None, f"lvm-pipeline dev exited: {(tmp_path / 'dev.err').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the UI never answered"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    assert json.load(response)["dagster_webserver_version"]
                    break
            except OSError:
                time.sleep(0.5)
        (group,) = [pid for pid, _, ppid, _ in processes() if ppid == dev.pid]  # dagster dev: a group's leader
        assert len(live_processes_in_group(group)) >= 3  # dagster dev, the webserver, the daemon (and code servers)

        stopping = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        code = dev.wait(timeout=25)
        assert time.monotonic() - stopping < 22
        assert live_processes_in_group(group) == []
    finally:
        for leftover in (dev.pid, group):
            if leftover:
                try:
                    os.killpg(leftover, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        dev.wait(timeout=10)
    stdout, stderr = (tmp_path / "dev.out").read_text(), (tmp_path / "dev.err").read_text()
    assert stdout.splitlines()[0].endswith(f"dagster dev -w workspace.yaml -h 127.0.0.1 -p {port}")
    last = stderr.strip().splitlines()[-1]
    assert (code, last) == (0, "lvm-pipeline dev: stopped on SIGTERM") or (code == 1 and last.startswith(
        "lvm-pipeline dev: dagster dev did not stop within 15 s of SIGTERM: killed its process group")), last


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[1] == "parent":
    subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", ""])
time.sleep(120)
"""


def test_a_dev_process_that_ignores_sigterm_is_killed_with_its_whole_group_after_the_grace():
    dev = DevProcess([sys.executable, "-c", STUBBORN, "parent", STUBBORN], grace_seconds=1.0)
    try:
        deadline = time.monotonic() + 30
        while len(live_processes_in_group(dev.child.pid)) < 2:  # the parent and its child, both ignoring SIGTERM
            assert time.monotonic() < deadline and dev.child.poll() is None
            time.sleep(0.05)
        dev.on_signal(signal.SIGTERM)
        started = time.monotonic()
        code = dev.wait()
        assert 1.0 <= time.monotonic() - started < 5
        assert code == -signal.SIGKILL and dev.killed
        assert live_processes_in_group(dev.child.pid) == []
    finally:
        dev.kill_group()
