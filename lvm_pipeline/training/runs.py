"""Where training runs live: one folder per run under `<root>/<family>/`, and which run is current.

A new run never overwrites an earlier one (nothing lost); `current` names the run the benchmark
and the checks read, and is moved only once a run has finished.
"""

from __future__ import annotations

import time
from pathlib import Path

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.files import atomic_write

CURRENT_FILE = "current"


def new_run_dir(root: Path, family: str, run_id: str) -> Path:
    """A fresh folder for a run of `family`, named by time and run id so that a listing sorts by time."""
    return Path(root) / family / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id[:8]}"


def current_run_dir(root: Path, family: str) -> Path | None:
    """The current run of `family`, or None if it has none yet."""
    pointer = Path(root) / family / CURRENT_FILE
    if not pointer.is_file():
        return None
    run_dir = pointer.parent / pointer.read_text().strip()
    return run_dir if run_dir.is_dir() else None


def require_current_run(root: Path, family: str) -> Path:
    """The current run of `family`; PipelineError if it has none (materialize lvm_checkpoint)."""
    run_dir = current_run_dir(root, family)
    if run_dir is None:
        raise PipelineError(f"no trained {family} model yet: materialize lvm_checkpoint [{family}]")
    return run_dir


def set_current(run_dir: Path) -> None:
    """Make `run_dir` the current run of its family."""
    run_dir = Path(run_dir)
    atomic_write(run_dir.parent / CURRENT_FILE, lambda f: f.write(f"{run_dir.name}\n".encode()))
