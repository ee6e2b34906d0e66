"""Atomic file writes: readers see the old file or the new one, never half of one, and no temp file is left.

Files are written under hidden temporary names beside their final paths (`.NAME.tmp-PID-XXXX`: the
landing scan and readers skip dot-files), flushed to disk, then renamed into place. A disk that fills
up raises DiskFullError, a PipelineError, and leaves the previous files as they were.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from lvm_pipeline.errors import PipelineError

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(PipelineError, OSError):
    """No space (or quota) left while writing a file; the file it was to replace is unchanged."""

    def __str__(self) -> str:
        return self.strerror


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write` on a hidden temp file beside `path`, then rename it into place."""
    with atomic_files(path) as (handle,):
        write(handle)
    return Path(path)


@contextmanager
def atomic_files(*paths: Path) -> Iterator[tuple[BinaryIO, ...]]:
    """Binary handles on hidden temp files for `paths`; when the block succeeds they are all renamed into place.

    Renames follow the order of `paths`, after every file is complete and on disk: name last the file
    that says the set is complete (a manifest). If the block or a write fails, every temp file is removed
    and the files at `paths` are left as they were.
    """
    paths = tuple(Path(p) for p in paths)
    temps = [p.with_name(f".{p.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}") for p in paths]
    handles: list[BinaryIO] = []
    try:
        try:
            for path, temp in zip(paths, temps):
                path.parent.mkdir(parents=True, exist_ok=True)
                handles.append(open(temp, "wb"))
            yield tuple(handles)
            for handle in handles:
                if not handle.closed:  # a writer may have closed it (then it flushed it)
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()
            for temp, path in zip(temps, paths):
                os.replace(temp, path)
            for directory in {p.parent for p in paths}:
                _fsync_directory(directory)
        finally:
            for handle in handles:
                with suppress(OSError, ValueError):  # closing flushes: a full disk fails again
                    handle.close()
            for temp in temps:
                temp.unlink(missing_ok=True)
    except OSError as error:
        if error.errno in _FULL and not isinstance(error, DiskFullError):
            names = ", ".join(str(p) for p in paths)
            raise DiskFullError(error.errno, f"no space left on the device while writing {names} "
                                f"({error.strerror}); the previous file(s) are unchanged: free some space "
                                f"and run again") from error
        raise


def _fsync_directory(directory: Path) -> None:
    """Make the renames in `directory` durable (where the platform allows)."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` atomically unless `path` already holds exactly that; True when written."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    atomic_write(path, lambda handle: handle.write(data))
    return True
