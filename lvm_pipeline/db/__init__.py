"""PostgreSQL: which server, connections, schema migrations, and the stage tables' queries."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import psycopg2

from lvm_pipeline.config import APP_DATABASE, DAGSTER_DATABASE, Settings, settings
from lvm_pipeline.db.migrations import migrate
from lvm_pipeline.db.server import EmbeddedPostgres

_migrated: set[str] = set()


def embedded_server(config: Settings | None = None) -> EmbeddedPostgres:
    return EmbeddedPostgres((config or settings()).postgres_dir)


def database_url(config: Settings | None = None) -> str:
    """The application database: LVM_DATABASE_URL, else the embedded server (started if needed)."""
    config = config or settings()
    if config.database_url:
        return config.database_url
    server = embedded_server(config)
    server.start(databases=(APP_DATABASE, DAGSTER_DATABASE))
    return server.url(APP_DATABASE)


def dagster_storage_url(config: Settings | None = None) -> str:
    """Dagster's instance storage: DAGSTER_PG_URL, else the app database's server.

    With the embedded server Dagster gets a database of its own; with an external server it
    shares the app database unless DAGSTER_PG_URL says otherwise.
    """
    config = config or settings()
    if os.environ.get("DAGSTER_PG_URL"):
        return os.environ["DAGSTER_PG_URL"]
    url = database_url(config)
    if not config.database_url:
        url = embedded_server(config).url(DAGSTER_DATABASE)
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


@contextmanager
def connect(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a migrated database (migrations run once per process and URL)."""
    conn = psycopg2.connect(url)
    try:
        if url not in _migrated:
            migrate(conn)
            _migrated.add(url)
        yield conn
    finally:
        conn.close()
