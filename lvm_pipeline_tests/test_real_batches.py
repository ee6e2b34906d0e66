"""Gates under real batches: half-quarantined and duplicated batches STOP, small ones pass, an ungradeable batch
gives one alert, and a re-ingest keeps its segmentation. Real files through real Dagster runs on PostgreSQL."""

from __future__ import annotations

import bz2
import json

import pytest
from dagster import RunConfig, materialize

from lvm_pipeline import validation
from lvm_pipeline.db.concepts import load_batch
from lvm_pipeline.defs import resources
from lvm_pipeline.defs.datasets import OrderedVectorsConfig, ordered_vectors
from lvm_pipeline.segmentation import segment
from lvm_pipeline_tests.conftest import landing_dir
from lvm_pipeline_tests.test_gate_hygiene import alerts, tick
from lvm_pipeline_tests.test_mediawiki import dump, page
from lvm_pipeline_tests.test_validation import checks, run_batch, run_landing_file


def decisions(result) -> dict[str, str]:
    return {name: check.metadata["decision"].value for name, check in checks(result).items()}


def test_a_half_quarantined_batch_stops_on_the_quarantine_share(database_url, dagster_instance, vital_records):
    good = [json.dumps(r) for r in vital_records[:30]]
    bad = ['{"id": "x", "title": "T", "text": "unterminated', '{"id": "y", "title": "T", "text": "   "}',
           '{"title": "no id", "text": "Some text."}'] * 10
    (landing_dir() / "half.jsonl").write_text("\n".join(line for pair in zip(good, bad) for line in pair) + "\n")
    result = run_landing_file(dagster_instance, "half.jsonl")
    quarantine = checks(result)["quarantine"]
    assert quarantine.metadata["decision"].value == "STOP" and quarantine.metadata["quarantined_share"].value == 0.5
    report = quarantine.metadata["report"].value
    assert "malformed JSON" in report and "empty text" in report and "missing id" in report  # reasons, with counts
    assert not result.asset_materializations_for_node("concept_chunks")  # blocking: the batch goes no further
    tick(dagster_instance)
    assert set(alerts()) == {("half.jsonl", "quarantine")}


def test_a_batch_of_copies_under_new_ids_stops_on_duplicates(database_url, dagster_instance, conn, vital_records):
    original = vital_records[:20]
    assert run_batch(dagster_instance, "original.jsonl", original, mode="sentence").success
    fresh = vital_records[20:30]  # new to the bank, but twice in the batch
    copies = [dict(r, id=f"copy{k}:{r['id']}", title=f"{r['title']} ({k})") for k in range(2) for r in original + fresh]
    result = run_batch(dagster_instance, "copies.jsonl", copies, mode="sentence")
    duplicates = checks(result)["duplicates"]
    meta = {k: v.value for k, v in duplicates.metadata.items()}
    assert meta["decision"] == "STOP" and not result.success
    n_original, n_fresh = (sum(len(segment(r["text"], "sentence")) for r in records) for records in (original, fresh))
    assert (meta["n_already_in_bank"], meta["n_repeated_in_batch"]) == (2 * n_original, n_fresh)
    assert meta["duplicate_concept_share"] == pytest.approx((2 * n_original + n_fresh) / (2 * n_original + 2 * n_fresh))
    assert meta["near_duplicate_article_share"] == pytest.approx(50 / 60)
    assert "text already in batch original.jsonl" in meta["report"]
    (verdict,) = [v for v in validation.batch_eligibility(conn) if v.batch_id == "copies.jsonl"]
    assert not verdict.included and "duplicates" in verdict.reason
    assert decisions(run_batch(dagster_instance, "fresh.jsonl", vital_records[20:40], mode="sentence"))["duplicates"] == "GO"


def test_near_copies_are_found_by_minhash_where_no_chunk_is_an_exact_copy(database_url, dagster_instance, vital_records):
    originals = [r for r in vital_records if len(r["text"].split()) > 120][:10]
    assert run_batch(dagster_instance, "original.jsonl", originals, mode="packed").success

    def edited(text: str) -> str:  # one word in a hundred changed: every packed chunk differs, the article hardly
        words = text.split()
        return " ".join(w + "s" if i % 100 == 50 else w for i, w in enumerate(words))

    near = [dict(r, id=f"near:{r['id']}", title=f"{r['title']} (edited)", text=edited(r["text"])) for r in originals]
    meta = {k: v.value for k, v in checks(run_batch(dagster_instance, "near.jsonl", near))["duplicates"].metadata.items()}
    assert meta["near_duplicate_article_share"] >= 0.9 and meta["decision"] == "STOP"
    assert "near-duplicate article" in meta["report"] and "(edited)" in meta["report"]


def test_a_small_healthy_batch_raises_no_alert(database_url, dagster_instance, vital_records):
    result = run_batch(dagster_instance, "daily.jsonl", vital_records[10:15], mode="sentence")
    graded = decisions(result)
    assert graded.pop("directionality") == "not graded"
    assert result.success and set(graded.values()) == {"GO"}, {
        name: check.description for name, check in checks(result).items()}
    tmd = checks(result)["tmd_distribution"].metadata
    assert tmd["n_articles"].value == 5 and "(n=5)" in tmd["report"].value  # the share is judged with its sample size
    tick(dagster_instance)
    assert alerts() == {}


def test_a_truncated_dump_with_no_page_gives_one_alert(database_url, dagster_instance, vital_records):
    text = " ".join(r["text"] for r in vital_records[:5])
    data = bz2.compress(dump(page(1, "Only page", text)))
    (landing_dir() / "broken.xml.bz2").write_bytes(data[: len(data) // 2])
    result = run_landing_file(dagster_instance, "broken.xml.bz2")
    assert decisions(result) == {"quarantine": "STOP"}  # blocking: the rest do not run
    assert "truncated or corrupt file" in checks(result)["quarantine"].description
    tick(dagster_instance)
    assert set(alerts()) == {("broken.xml.bz2", "quarantine")}


def test_a_batch_with_nothing_to_grade_gives_one_alert_and_the_others_say_not_graded(database_url, dagster_instance):
    xml = dump(page(1, "Elsewhere", "#REDIRECT [[Somewhere]]", redirect="Somewhere"), page(2, "Talk", "Hi.", ns=1))
    (landing_dir() / "redirects.xml").write_bytes(xml)
    result = run_landing_file(dagster_instance, "redirects.xml")
    found = checks(result)
    assert found["data_integrity"].metadata["decision"].value == "STOP"
    ungraded = {name for name, check in found.items() if check.metadata["decision"].value == "not graded"}
    assert ungraded == set(found) - {"data_integrity"}, {n: c.description for n, c in found.items()}
    assert all(found[name].description.startswith("not graded") for name in ungraded - {"directionality"})
    tick(dagster_instance)
    assert set(alerts()) == {("redirects.xml", "data_integrity")}


def test_a_reingest_keeps_the_batch_segmentation_and_the_bank_refuses_mixed_modes(
        database_url, dagster_instance, conn, vital_records):
    assert run_batch(dagster_instance, "a.jsonl", vital_records[:20], mode="sentence").success
    sentences = len(load_batch(conn, "a.jsonl").texts)
    from lvm_pipeline.defs.assets import ConceptChunksConfig

    changed = vital_records[:19]  # the file changed; no mode asked for: the batch keeps sentence mode
    result = run_batch(dagster_instance, "a.jsonl", changed, ops={"concept_chunks": ConceptChunksConfig()})
    assert result.success and result.asset_materializations_for_node("concept_chunks")[0].metadata["mode"].value == "sentence"
    assert load_batch(conn, "a.jsonl").segmentation_mode == "sentence" and len(load_batch(conn, "a.jsonl").texts) < sentences

    assert run_batch(dagster_instance, "b.jsonl", vital_records[20:40], mode="packed").success
    mixed = materialize([ordered_vectors], instance=dagster_instance, resources=resources(), raise_on_error=False)
    assert not mixed.success
    failure = next(e for e in mixed.all_events if e.is_step_failure)
    assert "mix segmentation modes" in str(failure.step_failure_data.error.message) or \
        "mix segmentation modes" in str(failure.step_failure_data.user_failure_data.description)

    chosen = materialize([ordered_vectors], instance=dagster_instance, resources=resources(),
                         run_config=RunConfig(ops={"ordered_vectors": OrderedVectorsConfig(segmentation_mode="sentence")}))
    meta = chosen.asset_materializations_for_node("ordered_vectors")[0].metadata
    assert (meta["batches_included"].value, meta["batches_left_out"].value) == (1, 1)
    assert "b.jsonl | no | segmented in packed mode" in meta["batches"].value


@pytest.mark.parametrize("mode", ["sentence", "packed"])
def test_an_explicit_mode_still_resegments(database_url, dagster_instance, conn, vital_records, mode):
    other = "packed" if mode == "sentence" else "sentence"
    assert run_batch(dagster_instance, "a.jsonl", vital_records[:10], mode=mode).success
    assert run_batch(dagster_instance, "a.jsonl", vital_records[:9], mode=other).success
    assert load_batch(conn, "a.jsonl").segmentation_mode == other
