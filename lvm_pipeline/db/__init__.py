"""PostgreSQL: which server, connections and schema migrations. Every SQL statement lives in this package.

One module per concern: `batches`, `articles`, `concepts` (and one batch read back in order),
`encoders`, `gates` (results and the alert outbox), `bulk` (COPY and paged reads).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from lvm_pipeline.config import APP_DATABASE, DAGSTER_DATABASE, Settings, settings
from lvm_pipeline.db.migrations import migrate
from lvm_pipeline.db.server import EmbeddedPostgres
from lvm_pipeline.errors import DatabaseUnavailableError

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
    if config.dagster_pg_url:
        return config.dagster_pg_url
    url = database_url(config)
    if not config.database_url:
        url = embedded_server(config).url(DAGSTER_DATABASE)
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


@contextmanager
def connect(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a migrated database (migrations run once per process and URL)."""
    try:
        conn = psycopg2.connect(url)
    except psycopg2.OperationalError as error:
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {_without_password(url)}: {reason}. Check LVM_DATABASE_URL, "
            f"or unset it to use the embedded server (`lvm-pipeline db start`)") from error
    try:
        if url not in _migrated:
            migrate(conn)
            _migrated.add(url)
        yield conn
    finally:
        conn.close()


def _without_password(url: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)
