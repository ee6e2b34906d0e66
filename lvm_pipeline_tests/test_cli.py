"""The lvm-pipeline command: database control and the demo corpus (ingest is tested in test_dagster)."""

from __future__ import annotations

from pathlib import Path

from lvm_pipeline import cli
from lvm_pipeline_tests.conftest import landing_dir, write_jsonl


def test_db_url_and_status_with_an_external_server(database_url, capsys):
    assert cli.main(["db", "url"]) == 0
    assert capsys.readouterr().out.strip() == database_url
    assert cli.main(["db", "start"]) == 0
    assert "external server is in use" in capsys.readouterr().out


def test_demo_data_writes_landing_batches(database_url, capsys):
    assert cli.main(["demo-data", "--batches", "3", "--limit", "30"]) == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    landing = landing_dir()
    assert sorted(written) == sorted(landing.glob("vital_articles_*_of_03.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in written) == 30


def test_batches_lists_coverage(database_url, dagster_instance, vital_records, capsys):
    path = write_jsonl(landing_dir() / "cov.jsonl", vital_records[:40])
    assert cli.main(["ingest", str(path)]) == 0
    assert cli.main(["batches"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("cov.jsonl"))
    assert line.split()[1] == "embedded" and line.split()[-1] == "100.0%"


def test_demo_ingests_the_batches_and_builds_the_bank(database_url, dagster_instance, capsys):
    code = cli.main(["demo", "--batches", "2", "--limit", "120"])
    out = capsys.readouterr().out
    assert out.count("OK vital_articles_") == 2
    assert "ordered_vectors:" in out and "from 2 batches (0 left out)" in out
    assert "vital_articles_01_of_02.jsonl: included in training data" in out
    assert code == 0
