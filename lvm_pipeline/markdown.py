"""Markdown tables and one-line excerpts: what a person reads in the Dagster UI and in reports."""

from __future__ import annotations

from typing import Any, Sequence

EXCERPT_CHARS = 160


def excerpt(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(excerpt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
