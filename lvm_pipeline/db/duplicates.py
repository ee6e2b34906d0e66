"""What the duplicates gate reads: a batch's concepts whose normalised text occurs before them, and article
MinHash signatures (`article_signature`), of the batch and of the batches ingested before it.

"Before" is the order of first ingestion (`batch.created_at`), the rule article ids already
follow: the first batch to bring a text keeps it. Batches excluded on purpose do not count, nor
those the caller names in `ignore` (batches a blocking gate STOPped: they are not in the bank).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lvm_pipeline.db.bulk import copy_rows

_EARLIER = """(o.excluded_reason IS NULL AND o.batch_id <> ALL(%(ignore)s) AND (o.created_at, o.batch_id) <
               (SELECT created_at, batch_id FROM batch WHERE batch_id = %(batch)s))"""


def copy_signatures(cur, rows: Iterable[tuple[str, str, bytes]]) -> int:
    """COPY `article_signature` rows: (article_id, batch_id, minhash bytes)."""
    return copy_rows(cur, "article_signature", ("article_id", "batch_id", "minhash"),
                     ((article_id, batch_id, "\\x" + minhash.hex()) for article_id, batch_id, minhash in rows))


def concept_copies(cur, batch_id: str, ignore: Sequence[str] = ()) -> list[tuple[str, str, str, str | None]]:
    """(title, text, the earlier copy's title, the earlier batch or None) for each concept of the batch, in order,
    whose normalised text occurs earlier in the batch or in an earlier batch."""
    cur.execute(
        f"""WITH mine AS (
                SELECT e.article_title, e.concept_text, e.text_hash, a.ord, e.seq_in_article,
                       row_number() OVER w AS copy_no, first_value(e.article_title) OVER w AS first_title
                FROM cpe_entry e JOIN article a USING (article_id) WHERE e.batch_id = %(batch)s
                WINDOW w AS (PARTITION BY e.text_hash ORDER BY a.ord, e.seq_in_article))
            SELECT m.article_title, m.concept_text, coalesce(held.article_title, m.first_title), held.batch_id
            FROM mine m LEFT JOIN LATERAL (
                SELECT c.batch_id, c.article_title FROM cpe_entry c JOIN batch o USING (batch_id)
                WHERE c.text_hash = m.text_hash AND {_EARLIER} ORDER BY o.created_at LIMIT 1) held ON true
            WHERE m.copy_no > 1 OR held.batch_id IS NOT NULL
            ORDER BY m.ord, m.seq_in_article""",
        {"batch": batch_id, "ignore": list(ignore)})
    return cur.fetchall()


Signatures = list[tuple[str, bytes]]  # (article id, minhash)


def article_signatures(cur, batch_id: str, ignore: Sequence[str] = ()) -> tuple[Signatures, Signatures, dict[str, str]]:
    """(the earlier batches' signatures, the batch's own in file order, article id -> title for both)."""
    cur.execute(
        f"""SELECT s.article_id, s.minhash, a.title, s.batch_id = %(batch)s
            FROM article_signature s JOIN article a USING (article_id) JOIN batch o ON o.batch_id = s.batch_id
            WHERE s.batch_id = %(batch)s OR {_EARLIER}
            ORDER BY s.batch_id = %(batch)s, a.ord""",
        {"batch": batch_id, "ignore": list(ignore)})
    rows = cur.fetchall()
    earlier = [(r[0], bytes(r[1])) for r in rows if not r[3]]
    mine = [(r[0], bytes(r[1])) for r in rows if r[3]]
    return earlier, mine, {r[0]: r[2] for r in rows}
