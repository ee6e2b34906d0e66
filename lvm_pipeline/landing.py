"""The landing folder: which files are batches, and which are new or changed since the last look.

A batch is keyed by its file name. Its content hash decides whether it needs ingesting, so a
file that changes under the same name is re-ingested, never silently skipped. Hashes are only
recomputed when a file's size or mtime moved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lvm_pipeline.sources import SUPPORTED_SUFFIXES, source_format


@dataclass
class LandingScan:
    new: list[tuple[str, str]] = field(default_factory=list)  # (file name, sha256)
    changed: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    gone: list[str] = field(default_factory=list)
    state: dict[str, list] = field(default_factory=dict)  # name -> [size, mtime_ns, sha256]: the next cursor

    def summary(self) -> str:
        parts = [f"{len(self.new)} new", f"{len(self.changed)} changed", f"{len(self.unchanged)} unchanged"]
        lines = [f"landing: {', '.join(parts)}"]
        lines += [f"  new: {name} (sha256 {digest[:12]})" for name, digest in self.new]
        lines += [f"  changed: {name} (now sha256 {digest[:12]}): re-ingesting" for name, digest in self.changed]
        lines += [f"  skipped: {name}: {why}" for name, why in self.skipped]
        lines += [f"  gone: {name}" for name in self.gone]
        return "\n".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_landing(landing_dir: Path, previous: dict[str, list]) -> LandingScan:
    """Compare the folder with `previous` (the state of the last scan)."""
    scan = LandingScan()
    for path in sorted(Path(landing_dir).iterdir()) if Path(landing_dir).is_dir() else []:
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue  # hidden files are temporaries of writers that rename into place
        if source_format(path) is None:
            scan.skipped.append((name, f"unknown file type; supported: {', '.join(SUPPORTED_SUFFIXES)}"))
            continue
        stat = path.stat()
        if stat.st_size == 0:
            scan.skipped.append((name, "empty file (0 bytes)"))
            continue
        known = previous.get(name)
        if known and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            digest = known[2]
        else:
            digest = file_sha256(path)
        scan.state[name] = [stat.st_size, stat.st_mtime_ns, digest]
        if known is None:
            scan.new.append((name, digest))
        elif known[2] != digest:
            scan.changed.append((name, digest))
        else:
            scan.unchanged.append(name)
    scan.gone = sorted(set(previous) - set(scan.state))
    return scan
