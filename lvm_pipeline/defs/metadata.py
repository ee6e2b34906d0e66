"""Markdown for asset metadata: what a person reads in the Dagster UI."""

from __future__ import annotations

from typing import Any, Sequence

EXCERPT = 160


def md_cell(value: Any) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
