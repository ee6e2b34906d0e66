"""Parquet: one article per row, streamed a record batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_pipeline.sources.records import (
    Article,
    Rejected,
    SourceError,
    corrupt_file,
    record_excerpt,
    to_article,
    utf8_error_detail,
)

REQUIRED_COLUMNS = ("id", "title", "text")
BATCH_ROWS = 1_024
# What turning a value into Python raises when Python cannot hold it: a timestamp past year 9999
# (OverflowError), a time zone pytz does not know (KeyError), ...
_CONVERSION_ERRORS = (ArithmeticError, LookupError, ValueError, pa.ArrowException)
# What reading a damaged file raises (a footer's column name that is not UTF-8: UnicodeDecodeError, a ValueError).
_UNREADABLE = (pa.ArrowException, OSError, ValueError)


def read_parquet(path: Path, max_article_chars: int, clean_html: bool) -> Iterator[Article | Rejected]:
    """Open and check the schema now (SourceError if unreadable or a required column is missing);
    return a lazy iterator of one Article or Rejected per row ("row N", 1-based)."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except _UNREADABLE as error:
        raise SourceError(f"{path}: not a readable Parquet file: {error}") from error
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise SourceError(f"{path}: missing required column(s) {', '.join(missing)}; "
                          f"found: {', '.join(schema.names) or 'no columns'}")
    binary = {f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    return _rows(parquet, binary, max_article_chars, clean_html)


def _rows(parquet: pq.ParquetFile, binary: set[str], max_article_chars: int,
          clean_html: bool) -> Iterator[Article | Rejected]:
    number = 0
    batches = parquet.iter_batches(batch_size=BATCH_ROWS)
    try:
        while True:
            try:  # only reading the file: what the rows turn into is not corruption
                batch = next(batches)
            except StopIteration:
                return
            except _UNREADABLE as error:
                yield corrupt_file(f"row {number}", error)
                return
            for row in _batch_rows(batch):
                number += 1
                yield (_decoded(row, binary, f"row {number}", max_article_chars, clean_html) if isinstance(row, dict)
                       else Rejected(locator=f"row {number}", reason=row, excerpt=""))
    finally:
        parquet.close()


def _batch_rows(batch: pa.RecordBatch) -> list[dict | str]:
    """The batch's rows as dicts; a row holding a value Python cannot hold is the reason why instead."""
    try:
        return batch.to_pylist()
    except _CONVERSION_ERRORS:
        return [_row(batch, index) for index in range(batch.num_rows)]


def _row(batch: pa.RecordBatch, index: int) -> dict | str:
    row = {}
    for name, column in zip(batch.schema.names, batch.columns):
        try:
            row[name] = column[index].as_py()
        except _CONVERSION_ERRORS as error:
            return f"unreadable value: column {name!r} holds a value Python cannot represent: {type(error).__name__}: {error}"
    return row


def _decoded(row: dict, binary: set[str], locator: str, max_article_chars: int,
             clean_html: bool) -> Article | Rejected:
    """Decode the row's binary columns as strict UTF-8, then validate it."""
    for name in binary:
        if isinstance(value := row[name], bytes):
            try:
                row[name] = value.decode("utf-8")
            except UnicodeDecodeError as error:
                row[name] = value.decode("utf-8", errors="replace")
                return Rejected(locator=locator, excerpt=record_excerpt(row),
                                reason=f"invalid UTF-8: {utf8_error_detail(error, f'column {name!r}')}")
    return to_article(row, locator, max_article_chars, html=clean_html)
