"""Gate hygiene end to end: healthy batches raise no alert; each kind of bad batch does, once; markup is caught.

Real batches through real Dagster runs on PostgreSQL, alerts through the gate sensor's outbox.
"""

from __future__ import annotations

import json

from dagster import RunConfig, build_sensor_context, materialize

from lvm_pipeline.defs import defs, resources
from lvm_pipeline.defs.assets import RawArticlesConfig
from lvm_pipeline.defs.sensors import gate_sensor
from lvm_pipeline.sources.vital_articles import load_vital_articles
from lvm_pipeline_tests.conftest import landing_dir
from lvm_pipeline_tests.test_validation import checks, run_batch, shuffled_across_articles


def alerts() -> dict[tuple[str, str], dict]:
    """(batch, gate) -> alert body, of every alert file written so far."""
    found = [json.loads(p.read_text()) for p in (landing_dir().parent / "alerts").glob("*.json")]
    return {(a["batch_id"], a["gate"]): a for a in found}


def tick(instance, cursor=None):
    return gate_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources(), definitions=defs))


def wikitext_records(records: list[dict]) -> list[dict]:
    """Raw wikitext in the `text` field: what an export that skipped the wikitext parser looks like."""
    return [dict(r, id=f"wiki:{r['id']}", text=f"{{{{Infobox|name={r['title']}}}}}\n'''{r['title']}''' is "
                 f"[[{r['title']}|a topic]]. " + " ".join(f"[[{word}]]" for word in r["text"].split()[:30]) + ".")
            for r in records]


def test_healthy_batches_raise_no_alert(database_url, dagster_instance, vital_records):
    for name, mode, records in (("packed.jsonl", "packed", vital_records[:30]),
                                ("sentences.jsonl", "sentence", vital_records[30:])):  # other articles: not duplicates
        result = run_batch(dagster_instance, name, records, mode=mode)
        assert result.success
        graded = {name: c.metadata["decision"].value for name, c in checks(result).items()}
        assert graded.pop("directionality") == "not graded"  # informational
        assert set(graded.values()) == {"GO"}, {
            n: c.description for n, c in checks(result).items() if c.metadata["decision"].value != "GO"}
    tick(dagster_instance)
    assert alerts() == {}


def test_each_kind_of_bad_batch_alerts_once(database_url, dagster_instance, vital_records):
    corpus = load_vital_articles()
    single_topic = [r for r in corpus if r["topic"] == "Mathematics"][:40]
    tiny = [dict(r, id=f"tiny:{r['id']}", text="\n\n".join(f"Item {i} of {r['title'][:20]}." for i in range(4)))
            for r in vital_records[:40]]
    batches = {"shuffled.jsonl": shuffled_across_articles(vital_records[:40]), "maths.jsonl": single_topic,
               "wikitext.jsonl": wikitext_records(vital_records[:40]), "tiny.jsonl": tiny}
    results = {name: run_batch(dagster_instance, name, records) for name, records in batches.items()}

    markup = checks(results["wikitext.jsonl"])["text_quality"]
    assert markup.metadata["decision"].value == "STOP" and markup.metadata["markup_share"].value > 0.5
    assert "wiki" in markup.metadata["report"].value  # the worst examples name the kind
    assert not results["wikitext.jsonl"].asset_materializations_for_node("concept_vectors")  # blocked: not embedded
    assert checks(results["tiny.jsonl"])["chunk_boundaries"].metadata["decision"].value == "WARN"

    cursor = tick(dagster_instance).cursor
    sent = alerts()
    assert {("shuffled.jsonl", "coherence"), ("maths.jsonl", "tmd_distribution"), ("wikitext.jsonl", "text_quality"),
            ("tiny.jsonl", "chunk_boundaries")} <= set(sent)
    assert sent[("wikitext.jsonl", "text_quality")]["decision"] == "STOP"
    assert not any(gate == "directionality" for _, gate in sent)  # informational: never an alert
    tick(dagster_instance, cursor)
    assert alerts() == sent  # each result alerts once


def test_html_is_cleaned_from_plain_text_sources_and_counted(database_url, dagster_instance, conn, vital_records):
    records = [dict(r, text=f"<p>{r['text']}</p><script>x</script>") for r in vital_records[:20]]
    result = run_batch(dagster_instance, "html.jsonl", records)
    assert result.success
    raw = result.asset_materializations_for_node("raw_articles")[0].metadata
    assert raw["html_cleaned"].value == 20 and "<p>" not in raw["html_cleaned_examples"].value
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM cpe_entry WHERE concept_text ~ '[<>]|script'")
        assert cur.fetchone()[0] == 0
    assert checks(result)["text_quality"].metadata["markup_share"].value == 0

    kept = run_batch(dagster_instance, "html-kept.jsonl", [dict(r, id=f"k:{r['id']}") for r in records],
                     ops={"raw_articles": RawArticlesConfig(clean_html=False)})
    quality = checks(kept)["text_quality"]
    assert not kept.success and quality.metadata["decision"].value == "STOP"
    assert "</p>" in quality.metadata["report"].value


def test_a_record_of_nothing_but_markup_is_quarantined(database_url, dagster_instance, vital_records):
    records = vital_records[:3] + [{"id": "empty-html", "title": "T", "text": "<div><script>x()</script></div>"}]
    landing = landing_dir() / "b.jsonl"
    landing.write_text("".join(json.dumps(r) + "\n" for r in records))
    from lvm_pipeline.defs.assets import raw_articles
    from lvm_pipeline.defs.partitions import batches

    dagster_instance.add_dynamic_partitions(batches.name, ["b.jsonl"])
    meta = materialize([raw_articles], partition_key="b.jsonl", instance=dagster_instance, resources=resources(),
                       run_config=RunConfig()).asset_materializations_for_node("raw_articles")[0].metadata
    assert meta["articles"].value == 3 and meta["quarantined"].value == 1
    assert "nothing but markup" in meta["quarantined_examples"].value
