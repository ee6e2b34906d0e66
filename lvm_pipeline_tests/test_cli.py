"""The lvm-pipeline command: database control and the demo corpus (ingest is tested in test_dagster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lvm_pipeline import cli
from lvm_pipeline_tests.conftest import PROJECT_ROOT, landing_dir, other_encoder_dir, write_jsonl


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
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("cov.jsonl"))
    assert line.split()[1] == "embedded" and line.split()[-1] == "100.0%"


def test_demo_ingests_the_batches_and_builds_the_bank(database_url, dagster_instance, capsys):
    code = cli.main(["demo", "--batches", "2", "--limit", "120", "--families", "gru", "--train-seconds", "5"])
    out = capsys.readouterr().out
    assert out.count("OK vital_articles_") == 2
    assert "ordered_vectors:" in out and "from 2 batches (0 left out)" in out
    assert "vital_articles_01_of_02.jsonl: included in training data" in out
    assert "check leakage: GO" in out and "training_sequences: train" in out
    assert any(line.startswith("lvm_checkpoint: gru (") for line in out.splitlines())
    assert "check training_loss:" in out and "check beats_copy_last:" in out
    report_line = next(line for line in out.splitlines() if line.startswith("benchmark_report:"))
    assert report_line.split(":")[1].strip() in ("GO", "WARN", "STOP")
    assert "gru vs " in report_line or "ensemble vs " in report_line  # the best model against the best baseline
    assert any(line.startswith("retrieval_benchmark: best ") for line in out.splitlines())
    assert (landing_dir().parent / "reports" / "benchmark_report.md").is_file()
    assert code == 0, out[-3000:]


# --- expected failures: one line that says what and what to do, a non-zero exit, no traceback ---------------

def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The installed command in a child process, so everything it prints (Dagster's logs too) is seen."""
    return subprocess.run([sys.executable, "-m", "lvm_pipeline.cli", *args], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=300)


def test_expected_failures_print_one_line_and_no_traceback(database_url, dagster_instance, tmp_path):
    env = dict(os.environ)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "notes.csv").write_text("id,title,text\n")
    result = run_cli("ingest", str(tmp_path / "empty.jsonl"), str(tmp_path / "notes.csv"), str(tmp_path / "gone.jsonl"),
                     env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"REJECTED {tmp_path / 'empty.jsonl'}: the file is empty",
                     f"REJECTED {tmp_path / 'notes.csv'}: unsupported file type; supported suffixes: "
                     ".jsonl, .parquet, .xml, .xml.bz2",
                     f"REJECTED {tmp_path / 'gone.jsonl'}: no such file"]


def test_a_missing_database_is_one_line_and_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, LVM_DATABASE_URL=f"postgresql://nobody@/lvm?host={tmp_path}&port=5999",
               LVM_DATA_DIR=str(tmp_path / "data"))
    result = run_cli("batches", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lvm-pipeline batches: cannot connect to PostgreSQL") and "LVM_DATABASE_URL" in line
    debug = run_cli("--debug", "batches", env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_an_unknown_batch_and_another_encoder_fail_with_their_reason(database_url, dagster_instance, vital_records,
                                                                     capsys, monkeypatch, tmp_path):
    assert cli.main(["exclude", "nope.jsonl", "--reason", "x"]) == 2
    assert "no batch 'nope.jsonl'" in capsys.readouterr().err

    path = write_jsonl(landing_dir() / "b.jsonl", vital_records[:3])
    assert cli.main(["ingest", str(path)]) == 0
    monkeypatch.setenv("LVM_ENCODER", str(other_encoder_dir(tmp_path / "minilm-64")))
    again = write_jsonl(landing_dir() / "c.jsonl", vital_records[3:6])
    assert cli.main(["ingest", str(again)]) == 1
    err = capsys.readouterr().err
    assert "FAILED c.jsonl" in err and "refusing to mix" in err and "Traceback" not in err

    monkeypatch.setenv("LVM_ENCODER", str(tmp_path / "no-such-model"))
    assert cli.main(["ingest", str(again)]) == 1
    (line,) = [row for row in capsys.readouterr().err.splitlines() if row.startswith("FAILED")]
    assert "no-such-model' is neither the packaged all-MiniLM-L6-v2 nor a local model directory" in line
    assert "DagsterExecutionStepExecutionError" not in line

