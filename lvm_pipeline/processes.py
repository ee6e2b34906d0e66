"""A child process in a session of its own, stopped with everything it started: signals passed on, then a bounded
wait, then SIGKILL of its whole process group (`lvm-pipeline dev` runs `dagster dev` this way)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_SECONDS = 15.0  # how long the child may take to stop after a signal before its process group is killed


class DevProcess:
    """`dagster dev` (or any `command`) as a child in a session of its own: its process group id is its pid."""

    def __init__(self, command: list[str], grace_seconds: float = STOP_GRACE_SECONDS):
        self.grace_seconds = grace_seconds
        self.first_signal: int | None = None
        self.signalled_at = 0.0
        self.killed = False
        self.child = subprocess.Popen(command, start_new_session=True, preexec_fn=_term_when_parent_dies())

    def on_signal(self, signum: int, _frame=None) -> None:
        """The first signal goes on to the child (SIGINT as SIGINT, any other as SIGTERM), which then stops its
        services; a second one kills the group."""
        if self.first_signal is not None:
            self.kill_group()
            return
        self.first_signal, self.signalled_at = signum, time.monotonic()
        try:
            os.kill(self.child.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """The child's exit code, once it exits or, grace_seconds after a signal, is killed with its group."""
        while True:
            try:
                return self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.first_signal is not None and time.monotonic() - self.signalled_at > self.grace_seconds:
                    self.kill_group()

    def kill_group(self, timeout: float = 5.0) -> None:
        """SIGKILL every process of the group, and wait (bounded) until none is alive."""
        if _group_members(self.child.pid):
            self.killed = self.killed or self.child.poll() is None
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + timeout
        while _group_members(self.child.pid) and time.monotonic() < deadline:
            self.child.poll()  # reap dagster dev itself
            time.sleep(0.05)


def _term_when_parent_dies():
    """A preexec_fn: on Linux the child gets SIGTERM when lvm-pipeline dev dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    if not Path("/proc/self").exists():  # no /proc: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    return [pid for pid in _pids() if (fields := proc_stat(pid)) and fields[0] != "Z" and int(fields[2]) == pgid]


def children(ppid: int) -> list[int]:
    """The processes whose parent is `ppid` (Linux /proc; none where that cannot be told)."""
    return [pid for pid in _pids() if (fields := proc_stat(pid)) and int(fields[1]) == ppid]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()] \
        if Path("/proc/self").exists() else []


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """True if `pid` has exited but is not reaped yet (Linux /proc; False where that cannot be told)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] == "Z"


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
