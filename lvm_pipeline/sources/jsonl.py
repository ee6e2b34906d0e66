"""JSON Lines (`.jsonl`, `.jsonl.gz`, `.jsonl.bz2`): one article object per line, streamed line by line in binary."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from lvm_pipeline.sources.compression import DECOMPRESSION_ERRORS, open_decompressed
from lvm_pipeline.sources.records import (
    MAX_NESTING,
    Article,
    Rejected,
    corrupt_file,
    nesting_depth,
    to_article,
    utf8_error_detail,
)
from lvm_pipeline.text import excerpt

CHUNK_BYTES = 1 << 20
# The longest line that can still hold a valid article: every character escaped as a
# surrogate pair (12 bytes), plus room for the other fields.
_BYTES_PER_CHAR = 12
_LINE_OVERHEAD = 1 << 20
_TOO_DEEP = f"malformed JSON: nested too deeply (more than {MAX_NESTING} levels of arrays and objects)"


class _Oversized(NamedTuple):
    """A line too long to hold: its first bytes and its full length."""

    head: bytes
    length: int


def read_jsonl(path: Path, max_article_chars: int, clean_html: bool) -> Iterator[Article | Rejected]:
    """Yield one Article or Rejected per non-blank line ("line N", 1-based).

    A compressed file that breaks off ends the iteration with one Rejected ("after line N"): the
    line cut by the break is lost with the rest.
    """
    max_line_bytes = max_article_chars * _BYTES_PER_CHAR + _LINE_OVERHEAD
    number = 0  # lines read whole
    with open_decompressed(path) as f:
        try:
            for number, line in enumerate(_lines(f, max_line_bytes), start=1):
                if isinstance(line, _Oversized):
                    yield Rejected(locator=f"line {number}", excerpt=excerpt(line.head),
                                   reason=f"article too long: the line is {line.length:,} bytes, over the "
                                          f"{max_line_bytes:,}-byte limit for {max_article_chars:,}-character articles")
                elif line.strip():
                    yield _parse_line(line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line,
                                      f"line {number}", max_article_chars, clean_html)
        except DECOMPRESSION_ERRORS as error:
            yield corrupt_file(f"line {number}", error)


def _lines(f: BinaryIO, max_line_bytes: int) -> Iterator[bytes | _Oversized]:
    """Each line's bytes; a line over `max_line_bytes` is skipped through, never held in memory."""
    while line := f.readline(max_line_bytes + 1):
        if len(line) <= max_line_bytes or line.endswith(b"\n"):
            yield line
            continue
        length = len(line)
        while (rest := f.readline(CHUNK_BYTES)) and not rest.endswith(b"\n"):
            length += len(rest)
        yield _Oversized(line[:1024], length + len(rest))


def _parse_line(line: bytes, locator: str, max_article_chars: int, clean_html: bool) -> Article | Rejected:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected(locator=locator, excerpt=excerpt(line),
                        reason=f"invalid UTF-8: {utf8_error_detail(error, 'the line')}")
    try:
        record = json.loads(text)
        problem = _TOO_DEEP if nesting_depth(record) > MAX_NESTING else None
    except json.JSONDecodeError as error:
        problem = f"malformed JSON: {error.msg} (column {error.colno})"
    except ValueError:  # json.loads leaves int() to refuse a number of too many digits
        problem = f"malformed JSON: an integer of more than {sys.get_int_max_str_digits():,} digits"
    except RecursionError:  # the stdlib parser recurses once a level: this is far past MAX_NESTING
        problem = _TOO_DEEP
    if problem is not None:
        return Rejected(locator=locator, excerpt=excerpt(line), reason=problem)
    return to_article(record, locator, max_article_chars, raw=text, html=clean_html)
