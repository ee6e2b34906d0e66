"""The `article` and `quarantine` tables: a batch's valid articles in file order, and its rejected records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from lvm_pipeline.db.bulk import copy_rows, stream

ARTICLE_COLUMNS = ("article_id", "batch_id", "ord", "title", "text", "url", "metadata")
QUARANTINE_COLUMNS = ("batch_id", "locator", "article_id", "reason", "raw_excerpt")


def copy_articles(cur, rows: Iterable[Sequence]) -> int:
    """COPY `article` rows, in ARTICLE_COLUMNS order."""
    return copy_rows(cur, "article", ARTICLE_COLUMNS, rows)


def copy_quarantine(cur, rows: Iterable[Sequence]) -> int:
    """COPY `quarantine` rows, in QUARANTINE_COLUMNS order."""
    return copy_rows(cur, "quarantine", QUARANTINE_COLUMNS, rows)


def articles_in_other_batches(cur, article_ids: Sequence[str], batch_id: str) -> dict[str, str]:
    """article id -> the other batch that already holds it."""
    cur.execute("SELECT article_id, batch_id FROM article WHERE article_id = ANY(%s) AND batch_id <> %s",
                (list(article_ids), batch_id))
    return dict(cur.fetchall())


def count_articles(cur, batch_id: str) -> int:
    cur.execute("SELECT count(*) FROM article WHERE batch_id = %s", (batch_id,))
    return cur.fetchone()[0]


def stream_articles(conn, batch_id: str, page_size: int) -> Iterator[list[tuple[str, str, str]]]:
    """Pages of (article_id, title, text) in file order."""
    return stream(conn, "SELECT article_id, title, text FROM article WHERE batch_id = %s ORDER BY ord",
                  (batch_id,), page_size)


def article_descriptions(cur, batch_id: str) -> dict[str, str]:
    """article id -> its short description (the record's `description` field, kept in `metadata`), where it is a string."""
    cur.execute("SELECT article_id, metadata->>'description' FROM article "
                "WHERE batch_id = %s AND jsonb_typeof(metadata->'description') = 'string'", (batch_id,))
    return dict(cur.fetchall())


def quarantine_reasons(cur, batch_id: str) -> list[tuple[str, int, str, str, str]]:
    """Per reason kind (the part before the first ':'): (kind, count, and the first record's locator, reason, excerpt)."""
    cur.execute(
        """SELECT DISTINCT ON (kind) kind, count(*) OVER (PARTITION BY kind), locator, reason, raw_excerpt
           FROM (SELECT split_part(reason, ':', 1) AS kind, * FROM quarantine WHERE batch_id = %s) q
           ORDER BY kind, quarantine_id""",
        (batch_id,))
    return cur.fetchall()
