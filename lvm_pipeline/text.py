"""Short, storable, one-line excerpts of text: what quarantine rows, gate examples and UI tables show."""

from __future__ import annotations

import re
from typing import Any

EXCERPT_CHARS = 200
# PostgreSQL `text` cannot store NUL; a lone surrogate is not valid UTF-8 (json.loads lets both through).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def excerpt(raw: Any, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of `raw` on one line, ending in "…" when cut.

    Bytes are decoded leniently; undecodable bytes, NUL and lone surrogates become U+FFFD.
    """
    if isinstance(raw, bytes):
        raw = raw[: limit * 8].decode("utf-8", errors="replace")
    text = " ".join(UNSTORABLE.sub("\ufffd", str(raw)[: limit * 8]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
