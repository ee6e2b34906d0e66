"""Helpers the benchmark scripts share: a fresh database on a throwaway server, and peak memory."""

from __future__ import annotations

import uuid
from pathlib import Path

from lvm_pipeline.db.server import EmbeddedPostgres


def fresh_database(server: EmbeddedPostgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    server.start(databases=(name,))
    return server.url(name)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across exec, so a child started by a large parent would report the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
