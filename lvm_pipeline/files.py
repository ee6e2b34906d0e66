"""Atomic file writes: readers see the old file or the new one, never half of one, and no temp file is left."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write` on a hidden temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` atomically unless `path` already holds exactly that; True when written."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    atomic_write(path, lambda handle: handle.write(data))
    return True
