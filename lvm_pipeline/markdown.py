"""Markdown tables: what a person reads in the Dagster UI and in reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lvm_pipeline.text import excerpt


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(excerpt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
