"""The lvm-pipeline command: database control and the demo corpus (ingest is tested in test_dagster)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lvm_pipeline import cli
from lvm_pipeline_tests.conftest import PROJECT_ROOT, landing_dir, other_encoder_dir, own_server, write_jsonl


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
    assert any(line.startswith("lvm_onnx: parity holds") for line in out.splitlines())
    verdict = next(line for line in out.splitlines() if line.startswith("deployment_readiness:"))
    assert verdict.startswith("deployment_readiness: STOP: ship the baseline instead")  # a 5-second toy model
    assert (landing_dir().parent / "reports" / "deployment_readiness.json").is_file()
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
                     ".jsonl, .jsonl.gz, .jsonl.bz2, .parquet, .xml, .xml.gz, .xml.bz2",
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



def test_the_database_going_away_during_ingest_is_one_line(tmp_path, vital_records):
    """A server of the test's own, stopped once the run is under way: one line, exit 2, no traceback."""
    import psycopg2

    out, err = (tmp_path / "ingest.out").open("w+"), (tmp_path / "ingest.err").open("w+")
    ingest = None
    with own_server("lvm-pg-gone-", databases=("lvm",)) as server:
        try:
            url = server.url("lvm")
            batch = write_jsonl(tmp_path / "gone.jsonl", vital_records[:40])
            env = {k: v for k, v in os.environ.items() if k != "DAGSTER_PG_URL"}  # Dagster's storage: that server too
            env.update(LVM_DATABASE_URL=url, LVM_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(PROJECT_ROOT),
                       LVM_DAGSTER_DIR=str(tmp_path / "dagster"))
            ingest = subprocess.Popen([sys.executable, "-m", "lvm_pipeline.cli", "ingest", str(batch)], cwd=PROJECT_ROOT,
                                      env=env, stdout=out, stderr=err)
            deadline = time.monotonic() + 120
            while True:  # until Dagster says the run has started
                assert ingest.poll() is None, (tmp_path / "ingest.err").read_text()[-3000:]
                assert time.monotonic() < deadline, "the run never started"
                try:
                    with psycopg2.connect(url) as conn, conn.cursor() as cur:
                        cur.execute("SELECT count(*) FROM runs WHERE status = 'STARTED'")
                        if cur.fetchone()[0]:
                            break
                except psycopg2.Error:  # Dagster's tables are not there yet
                    pass
                time.sleep(0.1)
            server.stop()
            code = ingest.wait(timeout=240)  # dagster-postgres retries each write a few times first
        finally:
            if ingest and ingest.poll() is None:
                ingest.kill()
                ingest.wait(timeout=30)
    stderr = (tmp_path / "ingest.err").read_text()
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert "Retrying failed database connection" not in stderr  # dagster-postgres's warnings: only with -v
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lvm-pipeline ingest: the database went away during the run (connection to server"), last
    assert last.endswith("check the server LVM_DATABASE_URL names, then re-run the same command; "
                         "the interrupted step's writes were rolled back"), last


def test_predict_with_text_that_is_not_utf8_is_one_line(tmp_path):
    """Checked before any model is needed, whatever the locale says stdin is."""
    env = dict(os.environ, LVM_DATA_DIR=str(tmp_path / "data"))
    command = [sys.executable, "-m", "lvm_pipeline.cli", "predict"]
    stdin = b"Paris is the capital of France.\ncaf\xe9\n"
    for locale in ("C.UTF-8", "C"):
        result = subprocess.run(command, input=stdin, capture_output=True, env=dict(env, LC_ALL=locale), cwd=PROJECT_ROOT,
                                timeout=120)
        assert (result.returncode, result.stderr.decode().strip()) == (
            2, f"lvm-pipeline predict: stdin is not UTF-8 text: byte 0xe9 at position {stdin.index(0xe9)} (line 2)")
    result = subprocess.run([*command, "Paris.", b"caf\xe9"], capture_output=True, env=env, cwd=PROJECT_ROOT, timeout=120)
    assert (result.returncode, result.stderr.decode().strip()) == (
        2, "lvm-pipeline predict: argument 2 is not UTF-8 text: byte 0xe9 at position 3")


def test_predict_without_a_checkpoint_or_a_bank_is_one_line(tmp_path):
    env = dict(os.environ, LVM_DATA_DIR=str(tmp_path / "data"))
    missing = run_cli("predict", "--checkpoint", str(tmp_path / "none.pt"), "Paris.", env=env)
    assert (missing.returncode, missing.stderr.strip()) == (2, f"lvm-pipeline predict: no checkpoint file {tmp_path / 'none.pt'}")
    (tmp_path / "model.pt").write_bytes(b"")  # the bank is looked for before the checkpoint is read
    no_bank = run_cli("predict", "--checkpoint", str(tmp_path / "model.pt"), "Paris.", env=env)
    assert no_bank.returncode == 2 and "Traceback" not in no_bank.stderr
    (line,) = no_bank.stderr.strip().splitlines()
    assert line.startswith(f"lvm-pipeline predict: no concept bank in {tmp_path / 'data' / 'exports'}"), line


def test_an_unreachable_dagster_storage_is_one_line_before_any_run(database_url, tmp_path):
    env = dict(os.environ, DAGSTER_PG_URL=f"postgresql+psycopg2://nobody@/dagster?host={tmp_path}&port=5999")
    write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "title": "T", "text": "Some text."}])
    result = run_cli("ingest", str(tmp_path / "b.jsonl"), env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lvm-pipeline ingest: cannot connect to Dagster's storage (DAGSTER_PG_URL): connection to"), line
