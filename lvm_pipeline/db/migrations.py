"""Ordered, idempotent SQL migrations (`migrations/NNNN_name.sql`), recorded in `schema_migration`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from lvm_pipeline.errors import PipelineError

_LOCK_KEY = 7_262_021  # pg_advisory_xact_lock key: one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(PipelineError):
    """An applied migration's file changed, or the database is ahead of this code."""


def available() -> list[Migration]:
    found = []
    for entry in resources.files("lvm_pipeline.db").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(conn) -> list[str]:
    """Apply the pending migrations in one transaction; return the names applied."""
    applied_now = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT version, checksum FROM schema_migration")
        applied = dict(cur.fetchall())
        known = {m.version for m in available()}
        if set(applied) - known:
            raise MigrationError(f"database has migrations {sorted(set(applied) - known)} this code does not know")
        for migration in available():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version:04d}_{migration.name} changed after it was applied")
                continue
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(f"{migration.version:04d}_{migration.name}")
    return applied_now
