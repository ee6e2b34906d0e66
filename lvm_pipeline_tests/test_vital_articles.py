"""The demo corpus: loading the vital-article leads and splitting them into landing batches."""

from __future__ import annotations

import json

import pytest

from lvm_pipeline.sources import Article, read_batch
from lvm_pipeline.sources.vital_articles import load_vital_articles, write_demo_batches


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_vital_articles()


def test_load_vital_articles(records):
    assert len(records) > 10_000
    assert len({r["id"] for r in records}) == len(records)
    first = records[0]
    assert set(first) == {"id", "title", "text", "url", "topic", "description"}
    assert first["id"] == first["title"] and first["text"].strip() and first["topic"]
    assert first["url"] == "https://en.wikipedia.org/wiki/" + first["title"].replace(" ", "_")
    assert all(" " not in r["url"] for r in records)


def test_write_demo_batches_deals_round_robin_and_is_idempotent(tmp_path, records):
    landing = tmp_path / "landing" / "new"  # created if missing
    paths = write_demo_batches(landing)
    assert [p.name for p in paths] == [f"vital_articles_{i:02d}_of_10.jsonl" for i in range(1, 11)]
    ids = [[json.loads(line)["id"] for line in p.read_text(encoding="utf-8").splitlines()] for p in paths]
    assert ids == [[r["id"] for r in records[i::10]] for i in range(10)]  # dealt in turn, order kept in each file
    topics = [{json.loads(line)["topic"] for line in p.read_text(encoding="utf-8").splitlines()} for p in paths]
    assert all(len(t) >= 10 for t in topics)  # every batch samples the whole (topic-sorted) corpus
    assert sorted(p.name for p in landing.iterdir()) == [p.name for p in paths]  # no temp files left

    stamps = [p.stat().st_mtime_ns for p in paths]
    assert write_demo_batches(landing) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps


def test_write_demo_batches_parquet_is_readable(tmp_path, records):
    paths = write_demo_batches(tmp_path, n_batches=3, limit=90, fmt="parquet")
    assert [p.name for p in paths] == [f"vital_articles_{i:02d}_of_03.parquet" for i in (1, 2, 3)]
    articles = [a for p in paths for a in read_batch(p)]
    assert all(isinstance(a, Article) for a in articles)
    assert [a.article_id for a in articles] == [r["id"] for i in range(3) for r in records[:90][i::3]]
    assert articles[0].url == records[0]["url"] and articles[0].metadata == {
        "topic": records[0]["topic"], "description": records[0]["description"]}


@pytest.mark.parametrize("n_batches", [0, 6])
def test_write_demo_batches_rejects_a_bad_batch_count(tmp_path, n_batches):
    with pytest.raises(ValueError, match="n_batches"):
        write_demo_batches(tmp_path, n_batches=n_batches, limit=5)
