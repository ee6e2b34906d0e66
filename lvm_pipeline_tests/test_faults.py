"""Fault injection on a real PostgreSQL: the server killed mid-COPY, mid-gate-write and mid-export, a landing file
truncated while it is read, a full disk.

Each test ingests a batch once, records its state, then faults the next step on a changed version of it and
checks that nothing half-written is visible, that the previous state is intact, and that a re-run (server
restarted) restores a complete, correct state. The tests that kill a server kill their own (module-scoped);
the fault is injected at a seam (a cursor's COPY, a wrapped function, a file's `open`), the database is real.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import psycopg2
import psycopg2.extensions
import pytest

from lvm_pipeline import db, files, ingest, validation
from lvm_pipeline.datasets import bank as bank_module
from lvm_pipeline.datasets.bank import CONCEPTS_FILE, MANIFEST_FILE, VECTORS_FILE, export_bank, open_bank
from lvm_pipeline.db.server import EmbeddedPostgres
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.files import DiskFullError, atomic_write
from lvm_pipeline.landing import file_sha256
from lvm_pipeline.processes import children, process_alive
from lvm_pipeline.sources import SourceError
from lvm_pipeline.tmd import ZeroShotTmdAssigner
from lvm_pipeline.validation import evaluate as evaluate_module
from lvm_pipeline_tests.conftest import _fresh_database, own_server

BATCH = "faults.jsonl"
BAD_LINE = '{"id": "broken", "title": "Cut off", "text": "no closing brace"'
KILL_WAIT_S = 15  # the longest SIGKILLed server processes may take to die


# -- a server of our own, killed like a crash ------------------------------------------------
@pytest.fixture(scope="module")
def server():
    """An embedded server for this module only: these tests kill it."""
    with own_server("lvm-pgf-") as pg:
        yield pg


@pytest.fixture
def url(server) -> str:
    """A fresh database on the module's server (started again if a test left it killed)."""
    server.start()
    return _fresh_database(server)


def kill_server(server: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster and all its children at once, as a machine crash would; return once all are dead.

    Each backend is a process group of its own (PostgreSQL calls setsid), so they are found by parent pid.
    """
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    backends = children(postmaster)
    processes = [postmaster, *backends]  # the postmaster first: it must not restart what dies
    assert os.getpid() not in processes and backends  # at least the checkpointer, the WAL writer, a backend
    for pid in processes:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while alive := [pid for pid in processes if process_alive(pid)]:
        assert time.monotonic() < deadline, f"postgres processes {alive} alive {KILL_WAIT_S} s after SIGKILL"
        time.sleep(0.02)


def kill_during_copy(conn, server: EmbeddedPostgres, table: str, nth: int) -> dict:
    """Make `conn` kill the server in the middle of its `nth` COPY into `table`: after the first 256-byte chunk
    of the data has been handed to libpq, before the rest and the end of the COPY. Returns {"killed": bool}."""
    pattern = re.compile(rf'COPY "?{table}"? ')
    state = {"copies": 0, "killed": False}

    class KillingReader:
        def __init__(self, file):
            self.file, self.reads = file, 0

        def read(self, size=-1):
            self.reads += 1
            if self.reads == 2:
                kill_server(server)
                state["killed"] = True
            return self.file.read(size)

    class Cursor(psycopg2.extensions.cursor):
        def copy_expert(self, statement, file, size=8192):
            if pattern.match(statement):
                state["copies"] += 1
                if state["copies"] == nth:
                    return super().copy_expert(statement, KillingReader(file), 256)
            return super().copy_expert(statement, file, size)

    conn.cursor_factory = Cursor
    return state


# -- batches and what the database holds of them ---------------------------------------------
def versions(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The batch as first ingested, and a changed version of it: one text edited, two articles gone, four new."""
    v1 = records[:6]
    v2 = [dict(records[0], text=records[0]["text"] + " It was revised in a later edition."),
          *records[1:4], *records[6:10]]
    return v1, v2


def write_batch(path: Path, records: list[dict], bad_line: bool = False) -> Path:
    """The landing file; with `bad_line`, a malformed record after the first article (it is quarantined)."""
    lines = [json.dumps(r) for r in records]
    if bad_line:
        lines.insert(1, BAD_LINE)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def ingest_all(conn, path: Path, encoder) -> None:
    ingest.parse_batch(conn, path)
    ingest.chunk_batch(conn, path.name, mode="packed")
    ingest.embed_batch(conn, path.name, encoder)


def query(conn, statement: str, *params):
    with conn.cursor() as cur:
        cur.execute(statement, params or None)
        return cur.fetchall()


def snapshot(conn, batch_id: str = BATCH) -> dict:
    """Everything the batch has in the database: its row and counters, its rows in order, a checksum of its vectors."""
    statements = {
        "batch": "SELECT content_hash, status, n_records, n_articles, n_quarantined, n_concepts, n_vectors "
                 "FROM batch WHERE batch_id = %s",
        "articles": "SELECT article_id, ord, md5(text) FROM article WHERE batch_id = %s ORDER BY ord",
        "quarantine": "SELECT locator, reason FROM quarantine WHERE batch_id = %s ORDER BY quarantine_id",
        "concepts": "SELECT cpe_id::text, seq_in_article, md5(concept_text) FROM cpe_entry WHERE batch_id = %s "
                    "ORDER BY cpe_id",
        "vectors": "SELECT count(*), md5(string_agg(cpe_id::text || concept_vec::text, ',' ORDER BY cpe_id)) "
                   "FROM cpe_vector WHERE batch_id = %s",
    }
    conn.rollback()
    return {name: query(conn, statement, batch_id) for name, statement in statements.items()}


def assert_complete(conn, path: Path, records: list[dict], encoder, n_quarantined: int = 0) -> None:
    """The batch is the file at `path`, whole: every article, every concept with its vector, the counters right."""
    conn.rollback()
    ((digest, status, n_records, n_articles, n_quar, n_concepts, n_vectors),) = snapshot(conn)["batch"]
    assert (digest, status) == (file_sha256(path), "embedded")
    assert (n_records, n_articles, n_quar) == (len(records) + n_quarantined, len(records), n_quarantined)
    assert [a for (a,) in query(conn, "SELECT article_id FROM article WHERE batch_id = %s ORDER BY ord", BATCH)] == [
        r["id"] for r in records]
    assert [t for (t,) in query(conn, "SELECT text FROM article WHERE batch_id = %s ORDER BY ord", BATCH)] == [
        r["text"] for r in records]
    assert query(conn, "SELECT count(*) FROM quarantine WHERE batch_id = %s", BATCH) == [(n_quarantined,)]
    (counted,) = query(conn, """SELECT count(*), count(v.cpe_id) FROM cpe_entry e LEFT JOIN cpe_vector v USING (cpe_id)
                                WHERE e.batch_id = %s""", BATCH)
    assert counted == (n_concepts, n_vectors) and n_concepts == n_vectors > len(records)
    # no vector of an earlier version is left behind, and a stored vector is its concept's
    assert query(conn, """SELECT count(*) FROM cpe_vector v LEFT JOIN cpe_entry e USING (cpe_id)
                          WHERE v.batch_id = %s AND e.cpe_id IS NULL""", BATCH) == [(0,)]
    ((text, stored),) = query(conn, """SELECT e.concept_text, v.concept_vec::text FROM cpe_entry e
                                       JOIN cpe_vector v USING (cpe_id) WHERE e.batch_id = %s
                                       ORDER BY e.cpe_id DESC LIMIT 1""", BATCH)
    np.testing.assert_allclose(json.loads(stored), encoder.encode([text])[0], atol=1e-5)


# -- 1. the server killed during COPY --------------------------------------------------------
def test_a_server_killed_during_the_article_copy_leaves_the_previous_batch(server, url, tmp_path, encoder,
                                                                           vital_records, monkeypatch):
    """parse_batch is one transaction: a crash in its second article COPY leaves the previous version whole."""
    v1, v2 = versions(vital_records)
    path = tmp_path / BATCH
    with db.connect(url) as conn:
        ingest_all(conn, write_batch(path, v1, bad_line=True), encoder)
        before = snapshot(conn)
    write_batch(path, v2)
    monkeypatch.setattr(ingest, "ARTICLE_PAGE", 2)  # 4 pages: the kill lands in the 2nd article COPY
    with db.connect(url) as conn:
        fault = kill_during_copy(conn, server, "article", nth=2)
        with pytest.raises(psycopg2.Error):
            ingest.parse_batch(conn, path)
    assert fault["killed"]

    server.start()
    with db.connect(url) as conn:
        assert snapshot(conn) == before  # status, counters, articles, quarantine, concepts, vectors
        assert before["batch"][0][1:5] == ("embedded", 7, 6, 1)
        ingest_all(conn, path, encoder)
        assert_complete(conn, path, v2, encoder)


def test_a_server_killed_during_the_vector_copy_leaves_the_previous_vectors(server, url, tmp_path, encoder,
                                                                            vital_records, monkeypatch):
    """embed_batch is one transaction: a crash in its second vector COPY leaves the vectors it was replacing."""
    v1, v2 = versions(vital_records)
    path = tmp_path / BATCH
    with db.connect(url) as conn:
        ingest_all(conn, write_batch(path, v1), encoder)
        first = snapshot(conn)
        write_batch(path, v2)
        ingest.parse_batch(conn, path)
        ingest.chunk_batch(conn, BATCH, mode="packed")
        before = snapshot(conn)  # the new concepts, still the first version's vectors
    assert before["batch"][0][1] == "chunked" and before["vectors"] == first["vectors"]
    monkeypatch.setattr(ingest, "CONCEPT_PAGE", 4)  # several pages: the kill lands in the 2nd vector COPY
    with db.connect(url) as conn:
        fault = kill_during_copy(conn, server, "cpe_vector", nth=2)
        with pytest.raises(psycopg2.Error):
            ingest.embed_batch(conn, BATCH, encoder)
    assert fault["killed"]

    server.start()
    with db.connect(url) as conn:
        assert snapshot(conn) == before
        ingest.embed_batch(conn, BATCH, encoder)  # re-run the stage that failed
        assert_complete(conn, path, v2, encoder)


def test_a_killed_server_is_seen_stopped_and_restarts_at_once_with_its_committed_data(server, url):
    """Right after a crash the dead postmaster may still be a zombie: status() says stopped, start() waits it out."""
    with db.connect(url) as conn, conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (n integer)")
        cur.execute("INSERT INTO kept VALUES (42)")
    kill_server(server)
    assert not server.status().running
    assert server.start().running
    with db.connect(url) as conn:
        assert query(conn, "SELECT n FROM kept") == [(42,)]  # committed before the crash: recovered from the WAL


# -- 2. the server killed during the gate writes ---------------------------------------------
def blocking_gates() -> list[str]:
    return [g.name for g in validation.GATES if g.blocking]


def run_gates(conn, names: list[str], encoder) -> None:
    for name in names:
        gate = validation.GATES_BY_NAME[name]
        validation.evaluate_gate(conn, BATCH, name, encoder if gate.needs_encoder else None)


def gate_rows(conn) -> list[tuple]:
    conn.rollback()
    return query(conn, "SELECT gate, content_hash, decision, summary, figures::text FROM gate_result "
                       "WHERE batch_id = %s ORDER BY gate_result_id", BATCH)


def verdict(conn) -> validation.Eligibility:
    conn.rollback()
    (found,) = [v for v in validation.batch_eligibility(conn) if v.batch_id == BATCH]
    return found


def test_a_server_killed_while_a_gate_result_is_written_records_it_whole_or_not_at_all(
        server, url, tmp_path, encoder, vital_records, monkeypatch):
    """A crash after a gate's INSERT, before its commit: no row for that gate, the batch not included; a re-run is."""
    v1, v2 = versions(vital_records)
    path = tmp_path / BATCH
    gates = blocking_gates()
    victim = gates[2]
    assigner = ZeroShotTmdAssigner(encoder)
    with db.connect(url) as conn:
        ingest_all(conn, write_batch(path, v1), encoder)
        ingest.assign_tmd(conn, BATCH, assigner)
        run_gates(conn, gates, encoder)
        assert verdict(conn).included, verdict(conn).reason
        first = gate_rows(conn)
        ingest_all(conn, write_batch(path, v2), encoder)
        ingest.assign_tmd(conn, BATCH, assigner)
    record = evaluate_module.record_gate_result

    def record_then_crash(cur, batch_id, content_hash, gate, *args, **kwargs):
        record(cur, batch_id, content_hash, gate, *args, **kwargs)  # the row is written, not yet committed
        if gate == victim:
            kill_server(server)

    monkeypatch.setattr(evaluate_module, "record_gate_result", record_then_crash)
    with db.connect(url) as conn:
        with pytest.raises(psycopg2.Error):
            run_gates(conn, gates, encoder)

    server.start()
    monkeypatch.setattr(evaluate_module, "record_gate_result", record)
    with db.connect(url) as conn:
        rows = gate_rows(conn)
        assert rows[:len(first)] == first  # the first version's results, untouched
        assert [(g, h) for g, h, *_ in rows[len(first):]] == [(g, file_sha256(path)) for g in gates[:2]]
        half = verdict(conn)
        assert not half.included and half.reason.startswith("not checked for its current content")
        assert victim in half.reason
        run_gates(conn, gates, encoder)
        whole = verdict(conn)
        assert whole.included, whole.reason
        current = {s.gate for s in validation.gate_status(conn, BATCH) if s.current}
        assert set(gates) <= current


# -- 3. the server killed during the bank export ---------------------------------------------
def bank_state(directory: Path) -> dict:
    """The files in the folder (hidden ones too) and what the bank in them holds."""
    bank = open_bank(directory)
    return {"files": sorted(p.name for p in directory.iterdir()), "manifest": bank.manifest,
            "vectors": np.array(bank.vectors), "cpe_ids": bank.column("cpe_id").tolist(),
            "texts": bank.texts.tolist()}


def assert_same_bank(state: dict, expected: dict) -> None:
    assert {k: v for k, v in state.items() if k != "vectors"} == {k: v for k, v in expected.items() if k != "vectors"}
    np.testing.assert_array_equal(state["vectors"], expected["vectors"])


def two_banks(url: str, tmp_path: Path, encoder, records: list[dict]) -> tuple[Path, dict, str]:
    """The first version exported to a bank folder, then the second version ingested: (folder, its state, new hash)."""
    v1, v2 = versions(records)
    path, out = tmp_path / BATCH, tmp_path / "exports"
    with db.connect(url) as conn:
        ingest_all(conn, write_batch(path, v1), encoder)
        export_bank(conn, [(BATCH, file_sha256(path))], out, page_size=3)
        old = bank_state(out)
        ingest_all(conn, write_batch(path, v2), encoder)
    assert old["files"] == sorted([MANIFEST_FILE, CONCEPTS_FILE, VECTORS_FILE])
    return out, old, file_sha256(path)


def assert_new_bank(conn, out: Path, old: dict) -> None:
    """The bank in `out` is the database's batch, whole, and not the old one."""
    new = bank_state(out)
    assert new["files"] == old["files"] and new["manifest"]["version"] != old["manifest"]["version"]
    expected = query(conn, """SELECT e.cpe_id::text, e.concept_text FROM cpe_entry e JOIN article a USING (article_id)
                              WHERE e.batch_id = %s ORDER BY a.ord, e.seq_in_article""", BATCH)
    assert list(zip(new["cpe_ids"], new["texts"])) == expected
    assert new["vectors"].shape == (len(expected), old["vectors"].shape[1])
    np.testing.assert_allclose(np.linalg.norm(new["vectors"], axis=1), 1.0, atol=1e-5)


def test_a_server_killed_during_the_bank_export_keeps_the_previous_bank(server, url, tmp_path, encoder,
                                                                        vital_records, monkeypatch):
    """The bank files are renamed into place only once all are written: a crash mid-stream changes no file."""
    out, old, digest = two_banks(url, tmp_path, encoder, vital_records)
    stream = bank_module.stream_bank

    def crash_after_the_first_page(conn, batch_ids, page_size):
        pages = stream(conn, batch_ids, page_size)
        yield next(pages)
        kill_server(server)
        yield from pages

    monkeypatch.setattr(bank_module, "stream_bank", crash_after_the_first_page)
    with db.connect(url) as conn:
        with pytest.raises(psycopg2.Error):
            export_bank(conn, [(BATCH, digest)], out, page_size=3)
    assert_same_bank(bank_state(out), old)  # the same three files, readable, no temp file

    server.start()
    monkeypatch.setattr(bank_module, "stream_bank", stream)
    with db.connect(url) as conn:
        export_bank(conn, [(BATCH, digest)], out, page_size=3)
        assert_new_bank(conn, out, old)


# -- 4. a landing file truncated while it is read --------------------------------------------
def long_records(records: list[dict], n: int = 6) -> list[dict]:
    """Records of about 40 kB a line: far more than a reader buffers ahead, so a cut is seen."""
    return [dict(r, id=f"long-{i}", text=" ".join([r["text"]] * (40_000 // len(r["text"]) + 1)))
            for i, r in enumerate(records[:n])]


def truncate_when(monkeypatch, path: Path, size: int, after: int) -> None:
    """Cut the landing file to `size` bytes once the parser has taken `after` records (0: before the first)."""
    read_batch = ingest.read_batch

    def reading(*args, **kwargs):
        records = read_batch(*args, **kwargs)  # the format check runs here
        if after == 0:
            os.truncate(path, size)
            return records
        return _cut_after(records, after, path, size)

    monkeypatch.setattr(ingest, "read_batch", reading)


def _cut_after(records, after: int, path: Path, size: int):
    for i, record in enumerate(records, start=1):
        yield record
        if i == after:
            os.truncate(path, size)


def line_end(path: Path, line: int) -> int:
    """The byte offset just past line `line` (1-based)."""
    return sum(len(x) for x in path.read_bytes().splitlines(keepends=True)[:line])


def test_a_landing_file_cut_between_its_check_and_its_read_ingests_what_is_there_with_the_tail_quarantined(
        url, tmp_path, vital_records, monkeypatch):
    """Cut before the content hash is taken: the torn last line is quarantined, and the batch's hash is the hash
    of the bytes ingested, so the complete file, when it lands again, reads as changed and is re-ingested."""
    path = write_batch(tmp_path / BATCH, vital_records[:4])
    truncate_when(monkeypatch, path, line_end(path, 2) + 40, after=0)  # 40 bytes into line 3
    with db.connect(url) as conn:
        report = ingest.parse_batch(conn, path)
        (row,) = snapshot(conn)["batch"]
        ((locator, reason),) = snapshot(conn)["quarantine"]
    assert (report.n_articles, report.n_quarantined) == (2, 1)
    assert row[:5] == (file_sha256(path), "parsed", 3, 2, 1)
    assert locator == "line 3" and reason.startswith("malformed JSON")


def test_a_landing_file_cut_while_it_is_read_fails_cleanly_and_keeps_the_previous_batch(
        url, tmp_path, vital_records, monkeypatch):
    """A clean SourceError (the file changed while it was read) and the previous state kept. It once ended
    'parsed' with 3 of its 6 records, none quarantined, under the hash of the whole file: it looked complete."""
    path = tmp_path / BATCH
    with db.connect(url) as conn:
        ingest.parse_batch(conn, write_batch(path, vital_records[:4]))
        before = snapshot(conn)
    write_batch(path, long_records(vital_records))
    monkeypatch.setattr(ingest, "ARTICLE_PAGE", 2)
    truncate_when(monkeypatch, path, line_end(path, 3), after=2)  # the first page taken, then cut after line 3
    with db.connect(url) as conn:
        with pytest.raises(SourceError, match="changed while"):
            ingest.parse_batch(conn, path)
        assert snapshot(conn) == before


# -- 5. a full disk --------------------------------------------------------------------------
class _FullDisk(io.RawIOBase):
    """A file on a disk with `room` bytes free: it takes that much (a short write), then fails with ENOSPC."""

    def __init__(self, path, room: int):
        super().__init__()
        self.file, self.room = io.FileIO(path, "wb"), room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.file.write(bytes(memoryview(data)[: self.room]))
        self.room -= written
        return written

    def fileno(self) -> int:
        return self.file.fileno()

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
        super().close()


def fill_disk(monkeypatch, name: str, room: int) -> None:
    """From now on, the temp file that `lvm_pipeline.files` opens for `name` has `room` bytes of disk."""
    def fake_open(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).name.startswith(f".{name}.tmp"):
            return io.BufferedWriter(_FullDisk(file, room))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", fake_open, raising=False)


def assert_disk_full_error(error: BaseException, path: Path) -> None:
    assert isinstance(error, PipelineError) and isinstance(error, OSError) and error.errno == errno.ENOSPC
    message = str(error)
    assert "\n" not in message and "no space left" in message and str(path) in message and "unchanged" in message


@pytest.mark.parametrize("room", [0, 20_000, 99_999], ids=["at-once", "mid-file", "at-the-final-flush"])
def test_a_full_disk_in_atomic_write_keeps_the_old_file(tmp_path, monkeypatch, room):
    """Whenever the disk fills (first write, a later one, the flush before the rename): old file kept, no temp."""
    path = atomic_write(tmp_path / "report.json", lambda f: f.write(b'{"old": true}'))
    fill_disk(monkeypatch, "report.json", room)
    with pytest.raises(DiskFullError) as raised:
        atomic_write(path, lambda f: [f.write(b"x" * 1_000) for _ in range(100)])  # 100 kB, in 1 kB writes
    assert_disk_full_error(raised.value, path)
    assert path.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    monkeypatch.setattr(files, "open", open)
    atomic_write(path, lambda f: f.write(b'{"new": true}'))
    assert path.read_bytes() == b'{"new": true}'


@pytest.fixture(scope="module")
def second_version(server, tmp_path_factory, encoder, vital_records) -> tuple[str, Path, str]:
    """A database holding the batch's second version, a bank folder exported from its first: (url, folder, hash).
    An export only reads the database, so the disk-full tests share it; each works on a copy of the folder."""
    server.start()
    url = _fresh_database(server)
    out, _, digest = two_banks(url, tmp_path_factory.mktemp("faults"), encoder, vital_records)
    return url, out, digest


@pytest.mark.parametrize("full_at, room", [(VECTORS_FILE, 100), (VECTORS_FILE, "all but one byte"),
                                           (CONCEPTS_FILE, 100), (MANIFEST_FILE, 100)])
def test_a_full_disk_during_the_bank_export_keeps_the_previous_bank(server, second_version, tmp_path, monkeypatch,
                                                                    full_at, room):
    """The disk fills while one of the three bank files is written (the vectors' last byte goes in the flush
    after the concepts file is complete; the manifest is written last): no bank file changes."""
    url, template, digest = second_version
    server.start()  # if a test before left it killed
    out = shutil.copytree(template, tmp_path / "exports")
    old = bank_state(out)
    if room == "all but one byte":
        with db.connect(url) as conn:
            ((n,),) = query(conn, "SELECT count(*) FROM cpe_vector WHERE batch_id = %s", BATCH)
        header = (out / VECTORS_FILE).stat().st_size - old["vectors"].nbytes
        room = header + n * old["vectors"].shape[1] * 4 - 1
    fill_disk(monkeypatch, full_at, room)
    with db.connect(url) as conn:
        with pytest.raises(DiskFullError) as raised:
            export_bank(conn, [(BATCH, digest)], out, page_size=3)
    assert_disk_full_error(raised.value, out / full_at)
    assert_same_bank(bank_state(out), old)

    monkeypatch.setattr(files, "open", open)
    with db.connect(url) as conn:
        export_bank(conn, [(BATCH, digest)], out, page_size=3)
        assert_new_bank(conn, out, old)
