"""STOP/GO gates end to end: real batches through real Dagster runs on PostgreSQL, the bank, the sensors, the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
from dagster import RunConfig, build_sensor_context, materialize

from lvm_pipeline import cli, validation
from lvm_pipeline.db.batches import set_excluded
from lvm_pipeline.defs import defs, resources
from lvm_pipeline.defs.assets import ConceptChunksConfig, ingestion_assets
from lvm_pipeline.defs.checks import gate_checks
from lvm_pipeline.defs.datasets import OrderedVectorsConfig, ordered_vectors
from lvm_pipeline.defs.partitions import batches
from lvm_pipeline.defs.sensors import gate_sensor, ordered_vectors_sensor
from lvm_pipeline.defs.validated import phase_report
from lvm_pipeline.segmentation import segment
from lvm_pipeline_tests.conftest import landing_dir, write_jsonl


def run_batch(instance, name: str, records: list[dict], mode: str = "packed", ops: dict | None = None):
    write_jsonl(landing_dir() / name, records)
    return run_landing_file(instance, name, {"concept_chunks": ConceptChunksConfig(mode=mode), **(ops or {})})


def run_landing_file(instance, name: str, ops: dict | None = None):
    """The ingestion assets and every gate on the landing file `name`, as the batch `name`."""
    instance.add_dynamic_partitions(batches.name, [name])
    return materialize([*ingestion_assets, *gate_checks], partition_key=name, instance=instance,
                       resources=resources(), raise_on_error=False, run_config=RunConfig(ops=ops or {}))


def shuffled_across_articles(records: list[dict]) -> list[dict]:
    """Same articles and sentence counts, but every sentence moved to a random article."""
    sentences = [[c.text for c in segment(r["text"], "sentence")] for r in records]
    pool = [s for group in sentences for s in group]
    random.Random(7).shuffle(pool)
    out, i = [], 0
    for record, group in zip(records, sentences):
        out.append(dict(record, id=f"shuffled:{record['id']}", text=" ".join(pool[i:i + len(group)])))
        i += len(group)
    return out


def checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_normal_batch_passes_and_is_recorded(database_url, dagster_instance, conn, vital_records):
    result = run_batch(dagster_instance, "good.jsonl", vital_records[:40])
    assert result.success
    evaluations = checks(result)
    assert set(evaluations) == {g.name for g in validation.GATES}
    assert all(e.metadata["decision"].value != "STOP" for e in evaluations.values())
    assert "| " in evaluations["coherence"].metadata["report"].value  # figures and examples as markdown
    statuses = validation.gate_status(conn, "good.jsonl")
    assert {s.gate for s in statuses} == set(evaluations) and all(s.current for s in statuses)
    (verdict,) = validation.batch_eligibility(conn)
    assert verdict.included, verdict.reason


def test_sentences_shuffled_across_articles_stop_coherence_and_stay_out_of_the_bank(
        database_url, dagster_instance, conn, vital_records, capsys):
    assert run_batch(dagster_instance, "good.jsonl", vital_records[:40]).success
    bad = run_batch(dagster_instance, "shuffled.jsonl", shuffled_across_articles(vital_records[:40]))
    assert not bad.success
    coherence = checks(bad)["coherence"]
    assert not coherence.passed and coherence.metadata["decision"].value == "STOP"
    assert not bad.asset_materializations_for_node("tmd_codes")  # blocked in the same run

    built = materialize([ordered_vectors], instance=dagster_instance, resources=resources(),
                        run_config=RunConfig(ops={"ordered_vectors": OrderedVectorsConfig(legacy_npz=True)}))
    meta = built.asset_materializations_for_node("ordered_vectors")[0].metadata
    assert (meta["batches_included"].value, meta["batches_left_out"].value) == (1, 1)
    assert "shuffled.jsonl | no | STOP: coherence" in meta["batches"].value
    with np.load(meta["npz"].value) as npz:  # no allow_pickle needed
        assert set(npz.files) >= {"cpe_ids", "concept_texts", "vectors", "tmd_codes", "batch_ids",
                                  "seq_in_article", "article_ids"}
        assert set(npz["batch_ids"]) == {"good.jsonl"}
        assert len(npz["vectors"]) == len(npz["concept_texts"]) == meta["concepts"].value
        first_article = npz["article_ids"] == npz["article_ids"][0]
        assert list(npz["seq_in_article"][first_article]) == list(range(first_article.sum()))

    assert cli.main(["gates"]) == 0
    out = capsys.readouterr().out
    assert "shuffled.jsonl: LEFT OUT of training data (STOP: coherence" in out
    assert "good.jsonl: included in training data" in out


def test_a_single_domain_batch_alerts_on_tmd_distribution_judged_by_its_article_count(database_url, dagster_instance):
    from lvm_pipeline.sources.vital_articles import load_vital_articles

    history = [r for r in load_vital_articles() if r["topic"] == "History"][:30]
    result = run_batch(dagster_instance, "history.jsonl", history)
    tmd = checks(result)["tmd_distribution"]
    # 73% of 30 articles cannot be told from 70% (the STOP bar), but is clearly over 50% (the GO bar): WARN
    assert tmd.metadata["decision"].value == "WARN" and "95% interval" in tmd.description, tmd.description
    assert tmd.metadata["top_share"].value > 0.7 and tmd.metadata["n_articles"].value == 30


def test_thresholds_are_set_per_run(database_url, dagster_instance, conn, vital_records):
    strict = {"concept_vectors_coherence": {"config": {"stop_mean": 0.95, "go_mean": 0.97}}}
    result = run_batch(dagster_instance, "strict.jsonl", vital_records[:40], ops=strict)
    coherence = checks(result)["coherence"]
    assert coherence.metadata["decision"].value == "STOP" and not result.success
    with conn.cursor() as cur:  # the thresholds it was held to are recorded with the result
        cur.execute("SELECT thresholds FROM gate_result WHERE batch_id = 'strict.jsonl' AND gate = 'coherence'")
        assert "0.95" in str(cur.fetchone()[0])


def test_warn_does_not_block(database_url, dagster_instance, conn, vital_records):
    # sentences held to a 200-character minimum mean length: chunk_boundaries WARNs, and nothing is blocked
    strict = {"concept_chunks_chunk_boundaries": {"config": {"sentence_mean_min": 200}}}
    result = run_batch(dagster_instance, "sentences.jsonl", vital_records[:40], mode="sentence", ops=strict)
    boundaries = checks(result)["chunk_boundaries"]
    assert boundaries.metadata["decision"].value == "WARN" and not boundaries.passed
    assert result.success and result.asset_materializations_for_node("tmd_codes")
    assert validation.batch_eligibility(conn)[0].included


def test_gate_sensor_alerts_and_requests_phase_reports(database_url, dagster_instance, vital_records):
    run_batch(dagster_instance, "shuffled.jsonl", shuffled_across_articles(vital_records[:40]))
    context = build_sensor_context(instance=dagster_instance, resources=resources(), definitions=defs)
    result = gate_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["shuffled.jsonl"]
    alerts = [json.loads(p.read_text()) for p in (landing_dir().parent / "alerts").glob("*.json")]
    stop = next(a for a in alerts if a["gate"] == "coherence")
    assert stop["decision"] == "STOP" and "shuffled.jsonl" in stop["message"]
    # nothing new: no second alert, no run
    again = gate_sensor(build_sensor_context(instance=dagster_instance, cursor=result.cursor,
                                             resources=resources(), definitions=defs))
    assert not again.run_requests

    report = materialize([phase_report], partition_key="shuffled.jsonl", instance=dagster_instance,
                         resources=resources()).asset_materializations_for_node("phase_report")[0].metadata
    assert report["decision"].value == "STOP"
    assert "## Next steps" in report["report"].value and "coherence" in report["rationale"].value


def test_ordered_vectors_sensor_fires_when_the_passing_set_changes(database_url, dagster_instance, conn, vital_records):
    def tick(cursor=None):
        return ordered_vectors_sensor(build_sensor_context(instance=dagster_instance, cursor=cursor,
                                                           resources=resources(), definitions=defs))

    empty = tick()
    assert len(empty.run_requests) == 1  # first look: build it (empty)
    assert not tick(empty.cursor).run_requests
    run_batch(dagster_instance, "good.jsonl", vital_records[:20])
    grown = tick(empty.cursor)
    assert len(grown.run_requests) == 1
    with conn, conn.cursor() as cur:
        set_excluded(cur, "good.jsonl", "on purpose, in a test")
    assert len(tick(grown.cursor).run_requests) == 1
    assert "excluded on purpose" in validation.batch_eligibility(conn)[0].reason
