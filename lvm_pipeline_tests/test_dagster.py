"""The Dagster layer for real: materialize on a PostgreSQL-backed instance, evaluate the sensor, run the CLI."""

from __future__ import annotations

import json

from dagster import AssetKey, build_sensor_context, materialize

from lvm_pipeline import cli
from lvm_pipeline.defs import defs, resources
from lvm_pipeline.defs.assets import ingestion_assets
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.sensors import landing_sensor
from lvm_pipeline_tests.conftest import landing_dir, write_jsonl


def test_definitions_load():
    keys = {a.key.to_user_string() for a in defs.resolve_all_asset_specs()}
    assert keys >= {"raw_articles", "concept_chunks", "concept_vectors"}
    assert defs.resolve_sensor_def("landing_sensor")


def test_materializing_a_batch_partition_writes_rows_and_readable_metadata(database_url, dagster_instance, conn, vital_records):
    write_jsonl(landing_dir() / "b1.jsonl", vital_records[:6])
    dagster_instance.add_dynamic_partitions(batches.name, ["b1.jsonl"])
    result = materialize(ingestion_assets, partition_key="b1.jsonl", instance=dagster_instance, resources=resources())
    assert result.success
    meta = {node: result.asset_materializations_for_node(node)[0].metadata
            for node in ("raw_articles", "concept_chunks", "concept_vectors")}
    assert meta["raw_articles"]["articles"].value == 6
    assert "| id | title | text |" in meta["raw_articles"]["sample"].value
    assert meta["concept_vectors"]["vectors"].value == meta["concept_chunks"]["concepts"].value
    assert meta["concept_vectors"]["dimension"].value == 384
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM cpe_vector WHERE batch_id = 'b1.jsonl'")
        assert cur.fetchone()[0] == meta["concept_chunks"]["concepts"].value
    event = dagster_instance.get_latest_materialization_event(AssetKey("concept_vectors"))
    assert event.dagster_event.partition == "b1.jsonl"


def test_a_bad_file_fails_its_run_with_the_reason(database_url, dagster_instance):
    (landing_dir() / "empty.jsonl").write_bytes(b"")
    dagster_instance.add_dynamic_partitions(batches.name, ["empty.jsonl"])
    result = materialize(ingestion_assets, partition_key="empty.jsonl", instance=dagster_instance,
                         resources=resources(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "empty" in failure.step_failure_data.error.message


def evaluate_sensor(instance, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources(),
                                   definitions=defs)
    return landing_sensor(context)


def test_the_sensor_registers_new_and_changed_files_and_says_what_it_saw(database_url, dagster_instance, vital_records):
    write_jsonl(landing_dir() / "a.jsonl", vital_records[:2])
    write_jsonl(landing_dir() / "b.jsonl", vital_records[2:4])
    (landing_dir() / "notes.txt").write_text("not a batch")
    (landing_dir() / ".c.jsonl.tmp").write_text("being written")

    first = evaluate_sensor(dagster_instance)
    assert sorted(r.partition_key for r in first.run_requests) == ["a.jsonl", "b.jsonl"]
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == ["a.jsonl", "b.jsonl"]
    cursor = json.loads(first.cursor)
    assert set(cursor) == {"a.jsonl", "b.jsonl"}
    for request in first.dynamic_partitions_requests:  # what the daemon does with the result
        dagster_instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    # nothing new: no runs, and the skip reason names what was seen
    second = evaluate_sensor(dagster_instance, first.cursor)
    assert not second.run_requests
    assert "2 unchanged" in second.skip_reason.skip_message and "notes.txt: unknown file type" in second.skip_reason.skip_message

    # a changed file under the same name is re-ingested, with a new run key
    write_jsonl(landing_dir() / "a.jsonl", vital_records[:3])
    third = evaluate_sensor(dagster_instance, second.cursor)
    (request,) = third.run_requests
    assert request.partition_key == "a.jsonl"
    assert request.run_key != next(r.run_key for r in first.run_requests if r.partition_key == "a.jsonl")
    assert not third.dynamic_partitions_requests  # the partition exists already once added


def test_the_sensor_skips_files_already_ingested_with_the_same_content(database_url, dagster_instance, vital_records):
    path = write_jsonl(landing_dir() / "done.jsonl", vital_records[:2])
    cli.ingest_paths([path])  # two articles: ingested, though too few to pass every gate
    result = evaluate_sensor(dagster_instance)  # a fresh cursor, as after a reset
    assert not result.run_requests
    assert "already ingested with this content: done.jsonl" in result.skip_reason.skip_message


def test_cli_ingest_runs_the_assets_on_the_instance_and_reports(database_url, dagster_instance, vital_records, capsys):
    good = write_jsonl(landing_dir() / "good.jsonl", vital_records[:40])  # enough articles to pass the gates
    (landing_dir() / "unknown.csv").write_text("id,title,text\n")
    failed = cli.ingest_paths([good, landing_dir() / "unknown.csv"])
    out, err = capsys.readouterr()
    assert failed == 1
    assert "OK good.jsonl: 40 articles (0 quarantined)" in out
    assert "REJECTED" in err and "unknown.csv" in err and "unsupported file type" in err
    assert "good.jsonl" in dagster_instance.get_dynamic_partitions(batches.name)
    assert dagster_instance.get_latest_materialization_event(AssetKey("concept_vectors")).dagster_event.partition == "good.jsonl"
