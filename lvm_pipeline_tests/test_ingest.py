"""The three ingest stages against a real PostgreSQL with the real encoder: rows, offsets, idempotency, bad input."""

from __future__ import annotations

import bz2
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lvm_pipeline import ingest
from lvm_pipeline.errors import EncoderMismatchError
from lvm_pipeline.sources import EmptySourceError, UnsupportedSourceError
from lvm_pipeline_tests.conftest import other_encoder_dir, write_jsonl


def run_all(conn, path: Path, encoder, mode="packed"):
    parsed = ingest.parse_batch(conn, path)
    chunked = ingest.chunk_batch(conn, parsed.batch_id, mode=mode)
    embedded = ingest.embed_batch(conn, parsed.batch_id, encoder)
    return parsed, chunked, embedded


def rows(conn, query: str, *params):
    with conn.cursor() as cur:
        cur.execute(query, params or None)
        return cur.fetchall()


def test_a_batch_becomes_ordered_concepts_with_exact_offsets_and_full_vector_coverage(conn, tmp_path, encoder, vital_records):
    records = vital_records[:12]
    parsed, chunked, embedded = run_all(conn, write_jsonl(tmp_path / "b1.jsonl", records), encoder)
    assert (parsed.n_articles, parsed.n_quarantined) == (12, 0)
    assert chunked.n_concepts == embedded.n_vectors > 12

    concepts = rows(conn, """SELECT e.article_id, e.seq_in_article, e.concept_text, e.char_start, e.char_end, a.text, a.metadata
                             FROM cpe_entry e JOIN article a USING (article_id) ORDER BY a.ord, e.seq_in_article""")
    by_article: dict[str, list[int]] = {}
    for article_id, seq, text, start, end, source, metadata in concepts:
        assert source[start:end] == text
        by_article.setdefault(article_id, []).append(seq)
        assert metadata["topic"]  # the demo corpus label is kept as article metadata
    assert list(by_article) == [r["id"] for r in records]  # article order kept
    assert all(seqs == list(range(len(seqs))) for seqs in by_article.values())

    (coverage,) = rows(conn, "SELECT count(v.cpe_id)::float / count(*) FROM cpe_entry e LEFT JOIN cpe_vector v USING (cpe_id)")
    assert coverage[0] == 1.0
    vectors = np.array([json.loads(v) for (v,) in rows(conn, "SELECT concept_vec::text FROM cpe_vector")], dtype=np.float32)
    assert vectors.shape[1] == encoder.dimension
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a stored vector is the encoder's vector of that very concept text
    (text, stored), = rows(conn, "SELECT e.concept_text, v.concept_vec::text "
                                 "FROM cpe_entry e JOIN cpe_vector v USING (cpe_id) LIMIT 1")
    np.testing.assert_allclose(json.loads(stored), encoder.encode([text])[0], atol=1e-5)
    (batch,) = rows(conn, "SELECT status, n_articles, n_concepts, n_vectors FROM batch")
    assert batch == ("embedded", 12, chunked.n_concepts, chunked.n_concepts)


def test_sentence_mode_gives_more_and_shorter_concepts(conn, tmp_path, vital_records):
    path = write_jsonl(tmp_path / "b.jsonl", vital_records[:10])
    ingest.parse_batch(conn, path)
    packed = ingest.chunk_batch(conn, "b.jsonl", mode="packed")
    sentences = ingest.chunk_batch(conn, "b.jsonl", mode="sentence")
    assert sentences.n_concepts > packed.n_concepts
    assert np.mean(sentences.lengths) < np.mean(packed.lengths)


def test_ten_reruns_leave_exactly_one_runs_rows(conn, tmp_path, encoder, vital_records):
    path = write_jsonl(tmp_path / "b.jsonl", vital_records[:3])
    snapshots = set()
    for _ in range(10):
        run_all(conn, path, encoder)
        snapshots.add(tuple(rows(conn, """SELECT (SELECT count(*) FROM article), (SELECT count(*) FROM cpe_entry),
                                          (SELECT count(*) FROM cpe_vector), (SELECT count(*) FROM quarantine),
                                          (SELECT string_agg(cpe_id::text, ',' ORDER BY cpe_id) FROM cpe_entry)""")[0]))
    assert len(snapshots) == 1
    n_articles, n_concepts, n_vectors, n_quarantined, _ = snapshots.pop()
    assert (n_articles, n_quarantined) == (3, 0) and n_concepts == n_vectors > 0


def test_a_run_killed_half_way_leaves_the_previous_rows(conn, database_url, tmp_path, vital_records):
    path = write_jsonl(tmp_path / "b.jsonl", vital_records[:5])
    ingest.parse_batch(conn, path)
    before = rows(conn, "SELECT article_id FROM article ORDER BY ord")
    # a much larger version of the same batch, killed while it is being written
    write_jsonl(path, [dict(r, id=f"{r['id']}#{i}") for i in range(400) for r in vital_records])
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from lvm_pipeline import db, ingest\n"
         "with db.connect(sys.argv[1]) as c: ingest.parse_batch(c, Path(sys.argv[2]))", database_url, str(path)],
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and child.poll() is None:
        # the child's open transaction has written rows into `article` (not yet committed)
        if rows(conn, """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                         WHERE c.relname = 'article' AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()""")[0][0]:
            time.sleep(0.5)
            break
        conn.rollback()
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL  # killed half-way, not finished
    conn.rollback()
    assert rows(conn, "SELECT article_id FROM article ORDER BY ord") == before
    assert rows(conn, "SELECT n_articles FROM batch") == [(5,)]


def test_bad_records_are_quarantined_with_reasons_and_the_rest_ingested(conn, tmp_path, vital_records):
    good = vital_records[:4]
    lines = [json.dumps(good[0]).encode(),
             b'{"id": "x1", "title": "Broken", "text": "no closing brace"',
             json.dumps({"id": "x2", "title": "Empty", "text": "   "}).encode(),
             json.dumps({"id": "x3", "title": "No text"}).encode(),
             json.dumps(good[1]).encode(),
             '{"id": "x4", "title": "Latin-1", "text": "caf\xe9"}'.encode("latin-1"),
             json.dumps({"id": "x5", "title": "Huge", "text": "word " * 300_000}).encode(),
             json.dumps(dict(good[1], title="Copy")).encode(),  # same id again
             json.dumps(good[2]).encode()]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = ingest.parse_batch(conn, path)
    assert report.n_records == len(lines)
    assert [a for (a,) in rows(conn, "SELECT article_id FROM article ORDER BY ord")] == [r["id"] for r in good[:3]]
    quarantined = rows(conn, "SELECT locator, article_id, reason, raw_excerpt FROM quarantine ORDER BY quarantine_id")
    reasons = {locator: reason for locator, _, reason, _ in quarantined}
    assert reasons["line 2"].startswith("malformed JSON")
    assert "text" in reasons["line 3"] and "text" in reasons["line 4"]
    assert reasons["line 6"].startswith("invalid UTF-8")
    assert "1,000,000" in reasons["line 7"]
    assert reasons["line 8"].startswith("duplicate article id") and "line 5" in reasons["line 8"]
    assert len(quarantined) == 6 == report.n_quarantined
    assert all(len(excerpt) <= 300 for *_, excerpt in quarantined)


def test_an_article_already_in_another_batch_is_quarantined(conn, tmp_path, vital_records):
    ingest.parse_batch(conn, write_jsonl(tmp_path / "first.jsonl", vital_records[:3]))
    report = ingest.parse_batch(conn, write_jsonl(tmp_path / "second.jsonl", vital_records[2:5]))
    assert report.n_articles == 2
    (reason,) = rows(conn, "SELECT reason FROM quarantine WHERE batch_id = 'second.jsonl'")
    assert "already ingested in batch 'first.jsonl'" in reason[0]
    # re-running the first batch does not count its own articles as duplicates
    assert ingest.parse_batch(conn, tmp_path / "first.jsonl").n_quarantined == 0


def test_a_truncated_bz2_dump_keeps_the_pages_before_the_damage(conn, tmp_path, encoder):
    pages = "".join(
        f"<page><title>Town {i}</title><ns>0</ns><id>{i}</id><revision><id>{100 + i}</id>"
        f"<text xml:space=\"preserve\">'''Town {i}''' is a town in [[Norway|Norwegian]] county {i}. "
        f"It has a church.{{{{cite web|url=x}}}} Its population is {i * 7} people.</text></revision></page>"
        for i in range(1, 2000))
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><siteinfo><sitename>W</sitename>'
           '<namespaces><namespace key="0" /></namespaces></siteinfo>' + pages + "</mediawiki>")
    data = bz2.compress(xml.encode(), compresslevel=1)  # 100 kB blocks: whole blocks survive the cut
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(data[: len(data) * 6 // 10])
    report = ingest.parse_batch(conn, path)
    assert 0 < report.n_articles < 1999
    (reason,) = rows(conn, "SELECT reason FROM quarantine")
    assert "truncated" in reason[0]
    chunked = ingest.chunk_batch(conn, report.batch_id)
    assert chunked.n_concepts >= report.n_articles
    assert not rows(conn, "SELECT 1 FROM cpe_entry WHERE concept_text LIKE '%cite web%' OR concept_text LIKE '%[[%'")


def test_whole_file_problems_are_rejected_with_a_message(conn, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(EmptySourceError, match="empty.jsonl"):
        ingest.parse_batch(conn, tmp_path / "empty.jsonl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedSourceError, match=r"\.jsonl"):
        ingest.parse_batch(conn, tmp_path / "notes.txt")
    assert rows(conn, "SELECT count(*) FROM batch") == [(0,)]


def test_a_second_encoder_is_refused_for_the_same_database(conn, tmp_path, encoder, vital_records):
    from lvm_pipeline.encoders import SentenceEncoder

    path = write_jsonl(tmp_path / "b.jsonl", vital_records[:2])
    run_all(conn, path, encoder)
    other = SentenceEncoder(str(other_encoder_dir(tmp_path / "minilm-64")))
    assert other.dimension == 64
    with pytest.raises(EncoderMismatchError, match="refusing to mix"):
        ingest.embed_batch(conn, "b.jsonl", other)
    assert rows(conn, "SELECT count(*) FROM cpe_vector") == [(rows(conn, "SELECT count(*) FROM cpe_entry")[0][0],)]


def test_the_short_description_reaches_the_domain_assigner(conn, tmp_path, encoder):
    from lvm_pipeline.db.articles import article_descriptions
    from lvm_pipeline.tmd import DOMAINS, ZeroShotTmdAssigner

    text = "Python was first described in the 1980s. It is now found in many places around the world."
    records = [{"id": "code", "title": "Python", "text": text, "description": "Programming language"},
               {"id": "snake", "title": "Python", "text": text, "description": "Genus of snakes"},
               {"id": "bare", "title": "Prime number", "text": "A prime number is a natural number greater than 1 "
                "that is not a product of two smaller natural numbers."},  # id/title/text only
               {"id": "odd", "title": "Python", "text": text, "description": 7}]  # not a string: no description
    run_all(conn, write_jsonl(tmp_path / "d.jsonl", records), encoder)
    with conn.cursor() as cur:
        assert article_descriptions(cur, "d.jsonl") == {"code": "Programming language", "snake": "Genus of snakes"}
    report = ingest.assign_tmd(conn, "d.jsonl", ZeroShotTmdAssigner(encoder))
    assert report.unknown["domain"] == 0
    domains = dict(rows(conn, "SELECT DISTINCT article_id, domain_code FROM cpe_entry"))
    assert {a: DOMAINS[c].name for a, c in domains.items()} == {
        "code": "Software", "snake": "Science", "bare": "Mathematics", "odd": "Software"}
