"""Helpers the benchmark scripts share: a fresh database on a throwaway server, and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lvm_pipeline.db.server import EmbeddedPostgres


@contextmanager
def throwaway_server() -> Iterator[tuple[EmbeddedPostgres, Path]]:
    """An embedded PostgreSQL in a temporary folder (readable by the server user), and the folder; both go after."""
    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        server = EmbeddedPostgres(workdir / "pg")
        server.start()
        try:
            yield server, workdir
        finally:
            server.stop()


def run_child(script: str, *args: str) -> dict:
    """Run `script` with `args` in a fresh Python process; the JSON object it prints last."""
    child = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def fresh_database(server: EmbeddedPostgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    server.start(databases=(name,))
    return server.url(name)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across exec, so a child started by a large parent would report the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
