"""Reading landing batch files (JSONL, Parquet, MediaWiki XML; JSONL and XML also gzip- or bzip2-compressed) into articles.

`read_batch` checks the file eagerly, then streams it: one `Article` or `Rejected` per record.
This layer knows nothing of Dagster or the database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from lvm_pipeline.sources.compression import DECOMPRESSION_ERRORS, open_decompressed
from lvm_pipeline.sources.jsonl import read_jsonl
from lvm_pipeline.sources.mediawiki import read_mediawiki
from lvm_pipeline.sources.parquet import read_parquet
from lvm_pipeline.sources.records import (
    DEFAULT_MAX_ARTICLE_CHARS,
    Article,
    EmptySourceError,
    Rejected,
    SourceError,
    UnsupportedSourceError,
)

__all__ = ["Article", "Rejected", "SourceError", "UnsupportedSourceError", "EmptySourceError",
           "SUPPORTED_SUFFIXES", "check_source", "source_format", "read_batch"]

_FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".jsonl.bz2": "jsonl", ".parquet": "parquet",
            ".xml": "mediawiki", ".xml.gz": "mediawiki", ".xml.bz2": "mediawiki"}
SUPPORTED_SUFFIXES = tuple(_FORMATS)
_READERS: dict[str, Callable[[Path, int, bool], Iterator[Article | Rejected]]] = {
    "jsonl": read_jsonl, "parquet": read_parquet, "mediawiki": read_mediawiki,
}
_SCAN_BYTES = 1 << 16


def source_format(path: str | os.PathLike) -> str | None:
    """"jsonl", "parquet" or "mediawiki" by the file's suffix (case-insensitive); None if unsupported."""
    name = Path(path).name.lower()
    return next((fmt for suffix, fmt in _FORMATS.items() if name.endswith(suffix)), None)


def read_batch(path: str | os.PathLike, *, max_article_chars: int = DEFAULT_MAX_ARTICLE_CHARS,
               clean_html: bool = True) -> Iterator[Article | Rejected]:
    """Stream a landing file as Articles and Rejected records, in file order.

    With `clean_html`, a plain-text source's (JSONL, Parquet) text that carries HTML becomes its
    plain text (`Article.html_cleaned`); MediaWiki pages are always turned into plain text.

    Raises now, before the first record: UnsupportedSourceError (unknown suffix),
    FileNotFoundError, EmptySourceError (0 bytes or only whitespace, decompressed for `.gz`/`.bz2`),
    SourceError (unreadable file, or a compressed file without its compression's signature).
    """
    path = Path(path)
    return _READERS[check_source(path)](path, max_article_chars, clean_html)


def check_source(path: str | os.PathLike) -> str:
    """The file's format; SourceError (or FileNotFoundError) now if it cannot be a batch, saying why."""
    path = Path(path)
    fmt = source_format(path)
    if fmt is None:
        raise UnsupportedSourceError(
            f"{path}: unsupported file type; supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if _is_blank(path):
        raise EmptySourceError(f"{path}: the file is empty")
    return fmt


def _is_blank(path: Path) -> bool:
    """True if the file's (decompressed) bytes are only whitespace; stops at the first other byte.

    A compressed file that breaks off is not blank: its reader yields what comes before the break.
    """
    with open_decompressed(path) as f:
        try:
            while chunk := f.read(_SCAN_BYTES):
                if chunk.strip():
                    return False
        except DECOMPRESSION_ERRORS:
            return False
    return True
